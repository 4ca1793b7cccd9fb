"""``geodns dnssec keygen`` and ``geodns dnssec ds``: keys written where the
zone finds them and nowhere else, DS records that dnspython (an
implementation we did not write) computes the same from the key files, and
the same DS for the DNSKEY a running node serves; every refusal an exit
status and a message, never a traceback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from geodns.cli import main
from geodns.dnssec import commands
from geodns.dnssec.keys import Role
from tests.serveproc import served

Capsys = pytest.CaptureFixture[str]
ZONE = "signed.test."
ALGORITHMS = {"ecdsap256sha256": dns.dnssec.Algorithm.ECDSAP256SHA256,
              "ed25519": dns.dnssec.Algorithm.ED25519}
ZONE_TEXT = """\
soa: {mname: ns1, rname: hostmaster, serial: 1}
records:
  "@": {NS: [ns1]}
  ns1: {A: 192.0.2.53}
  www: {A: 192.0.2.80}
"""


def site(tmp: Path, keys: list[dict[str, object]] | None = None, config: str = "") -> Path:
    """A node's directory: geodns.yaml, zones/signed.test.yaml (signed with
    ``keys`` when given), and the keys directory beside them (not made)."""
    (tmp / "zones").mkdir()
    text = ZONE_TEXT
    if keys is not None:
        text += yaml.safe_dump({"dnssec": {"keys": keys}}, default_flow_style=None)
    (tmp / "zones" / "signed.test.yaml").write_text(text)
    cfg = tmp / "geodns.yaml"
    cfg.write_text(config or "listen: [127.0.0.1:0]\nzones: zones\n")
    return cfg


def keygen(cfg: Path, name: str, capsys: Capsys, *extra: str) -> str:
    assert main(["dnssec", "keygen", "--config", str(cfg), name, *extra]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def theirs(pem: Path, flags: int) -> dns.rdata.Rdata:
    """The DNSKEY record of a key file, as dnspython makes it."""
    private = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
    algorithm = (dns.dnssec.Algorithm.ED25519 if isinstance(private, ed25519.Ed25519PrivateKey)
                 else dns.dnssec.Algorithm.ECDSAP256SHA256)
    return dns.dnssec.make_dnskey(private.public_key(), algorithm, flags=flags)


def records(out: str) -> list[tuple[str, str, dns.rdata.Rdata]]:
    """``owner IN TYPE rdata`` lines as (owner, type, parsed by dnspython)."""
    found = []
    for line in out.splitlines():
        owner, klass, rtype, rest = line.split(None, 3)
        assert klass == "IN", line
        found.append((owner, rtype, dns.rdata.from_text(dns.rdataclass.IN, rtype, rest)))
    return found


# -- keygen ------------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_keygen_writes_a_key_only_its_owner_reads(tmp_path: Path, capsys: Capsys,
                                                  algorithm: str) -> None:
    cfg = site(tmp_path)
    out = keygen(cfg, "signed.test.ksk.pem", capsys, "--algorithm", algorithm)
    keys = tmp_path / "keys"
    pem = keys / "signed.test.ksk.pem"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS #8
    dnskey = theirs(pem, flags=257)  # a ksk: zone key and SEP
    assert dnskey.algorithm == ALGORITHMS[algorithm]
    lines = out.splitlines()
    assert lines[0] == (f"wrote {pem}: algorithm {int(dnskey.algorithm)} ({algorithm}), "
                        f"key tag {dns.dnssec.key_id(dnskey)} as a ksk")
    # The line to paste into the zone's dnssec: keys: is YAML naming the file and role.
    assert lines[1] == "add it to the zone's dnssec: keys:"
    assert yaml.safe_load(lines[2].strip()) == [{"file": "signed.test.ksk.pem", "role": "ksk"}]
    assert "geodns dnssec ds ZONE" in lines[3]


@pytest.mark.parametrize("name,extra,role,flags", [
    ("a.zsk.pem", [], "zsk", 256),            # the role the name says
    ("a.pem", [], "csk", 257),                # else a combined key
    ("a.ksk.pem", ["--role", "zsk"], "zsk", 256),  # --role decides
])
def test_keygen_tag_is_the_roles(tmp_path: Path, capsys: Capsys, name: str, extra: list[str],
                                 role: str, flags: int) -> None:
    cfg = site(tmp_path)
    out = keygen(cfg, name, capsys, *extra)
    tag = dns.dnssec.key_id(theirs(tmp_path / "keys" / name, flags))
    assert f"algorithm 13 (ecdsap256sha256), key tag {tag} as a {role}" in out
    assert f"- {{file: {name}, role: {role}}}" in out
    assert ("says ksk, --role says zsk" in out) == bool(extra)


def test_keygen_uses_the_configured_keys_directory(tmp_path: Path, capsys: Capsys) -> None:
    cfg = site(tmp_path, config="zones: zones\nkeys: secret/dnssec\n")
    keygen(cfg, "k.pem", capsys)
    assert (tmp_path / "secret" / "dnssec" / "k.pem").is_file()
    assert not (tmp_path / "keys").exists()
    # --keys alone needs no configuration file.
    assert main(["dnssec", "keygen", "--keys", str(tmp_path / "other"), "k.pem"]) == 0
    assert (tmp_path / "other" / "k.pem").is_file()


def test_keygen_never_overwrites(tmp_path: Path, capsys: Capsys) -> None:
    cfg = site(tmp_path)
    keygen(cfg, "k.pem", capsys)
    pem = tmp_path / "keys" / "k.pem"
    before = pem.read_bytes()
    assert main(["dnssec", "keygen", "--config", str(cfg), "k.pem"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"geodns dnssec keygen: {pem} already exists: not overwritten (remove it "
                   "first if no zone uses it; a key in use is replaced by a rollover)\n")
    assert pem.read_bytes() == before
    # Nor a symbolic link's target.
    target = tmp_path / "elsewhere"
    target.write_text("precious")
    (tmp_path / "keys" / "link.pem").symlink_to(target)
    assert main(["dnssec", "keygen", "--config", str(cfg), "link.pem"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert target.read_text() == "precious"


@pytest.mark.parametrize("name", ["k.key", "sub/k.pem", "../k.pem", ".k.pem"])
def test_keygen_wants_a_bare_pem_file_name(tmp_path: Path, capsys: Capsys, name: str) -> None:
    cfg = site(tmp_path)
    assert main(["dnssec", "keygen", "--config", str(cfg), name]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"geodns dnssec keygen: {name!r}: give a file name ending in .pem, "
                          "without a path"), err
    assert not (tmp_path / "keys").exists()


def test_keygen_warns_when_others_may_enter_the_keys_directory(tmp_path: Path,
                                                               capsys: Capsys) -> None:
    cfg = site(tmp_path)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys").chmod(0o755)
    assert main(["dnssec", "keygen", "--config", str(cfg), "k.pem"]) == 0
    err = capsys.readouterr().err
    assert "warning: others than its owner may enter the keys directory" in err
    assert "(mode 0755): chmod 700" in err
    assert stat.S_IMODE((tmp_path / "keys" / "k.pem").stat().st_mode) == 0o600


def test_keygen_draws_again_for_a_tag_in_use(tmp_path: Path, capsys: Capsys,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Two keys of one tag in a zone are refused when it loads: keygen
    never makes a key whose tag a key of the directory has."""
    cfg = site(tmp_path)
    keygen(cfg, "old.pem", capsys)
    old = (tmp_path / "keys" / "old.pem").read_bytes()
    real = commands.generate
    drawn = iter([old, old])  # the same key twice, then new ones

    def generate(algorithm: int) -> bytes:
        return next(drawn, None) or real(algorithm)

    monkeypatch.setattr(commands, "generate", generate)
    keygen(cfg, "new.pem", capsys)
    assert (tmp_path / "keys" / "new.pem").read_bytes() != old
    assert next(drawn, None) is None  # both were drawn and refused


# -- ds ----------------------------------------------------------------------------------------

def signed_site(tmp: Path, capsys: Capsys, algorithm: str) -> Path:
    """A zone signed by a ksk and a zsk made by keygen, and a spare ksk
    published ahead of a rollover (sign: false)."""
    cfg = site(tmp, [{"file": "ksk.pem", "role": "ksk"}, {"file": "zsk.pem", "role": "zsk"},
                     {"file": "next.pem", "role": "ksk", "sign": False}])
    for name, role in (("ksk.pem", "ksk"), ("zsk.pem", "zsk"), ("next.pem", "ksk")):
        keygen(cfg, name, capsys, "--algorithm", algorithm, "--role", role)
    return cfg


@pytest.mark.parametrize("digest,dnspython", [("sha256", "SHA256"), ("sha384", "SHA384")])
@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_ds_is_dnspythons_for_every_key_signing_key(tmp_path: Path, capsys: Capsys,
                                                    algorithm: str, digest: str,
                                                    dnspython: str) -> None:
    cfg = signed_site(tmp_path, capsys, algorithm)
    argv = ["dnssec", "ds", "signed.test", "--config", str(cfg)]
    if digest != "sha256":
        argv += ["--digest", digest]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    keys = tmp_path / "keys"
    want = [dns.dnssec.make_ds(ZONE, theirs(keys / f, 257), dnspython)
            for f in ("ksk.pem", "next.pem")]  # not the zsk's
    assert records(out) == [(ZONE, "DS", ds) for ds in want]
    assert [ds.key_tag for _, _, ds in records(out)] == [  # type: ignore[attr-defined]
        dns.dnssec.key_id(theirs(keys / f, 257)) for f in ("ksk.pem", "next.pem")]
    assert out.split()[4] == str(int(ALGORITHMS[algorithm]))
    assert out.split()[5] == ("2" if digest == "sha256" else "4")
    # The spare key: its DS is listed, and why on stderr (stdout stays records only).
    tag = dns.dnssec.key_id(theirs(keys / "next.pem", 257))
    assert err == (f"geodns dnssec ds: note: key {tag} does not sign (sign: false): its DS "
                   "goes to the parent before the key signs, and away once it is retired\n")


def test_ds_with_dnskey_and_a_combined_key(tmp_path: Path, capsys: Capsys,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = site(tmp_path, [{"file": "csk.pem", "role": "csk"}])
    keygen(cfg, "csk.pem", capsys, "--algorithm", "ed25519")
    # The zone as written on the command line: any case, with or without the dot,
    # and ./geodns.yaml read when there is no --config.
    monkeypatch.chdir(tmp_path)
    assert main(["dnssec", "ds", "Signed.Test.", "--dnskey"]) == 0
    out, err = capsys.readouterr()
    dnskey = theirs(tmp_path / "keys" / "csk.pem", 257)
    assert records(out) == [(ZONE, "DS", dns.dnssec.make_ds(ZONE, dnskey, "SHA256")),
                            (ZONE, "DNSKEY", dnskey)]
    assert err == ""


def test_ds_is_the_ds_of_the_dnskey_the_node_serves(tmp_path: Path, capsys: Capsys) -> None:
    """What a parent's operator checks before adding the DS: it matches a
    key of the DNSKEY set the zone serves, and that key signs the set."""
    cfg = signed_site(tmp_path, capsys, "ecdsap256sha256")
    assert main(["dnssec", "ds", ZONE, "--config", str(cfg)]) == 0
    printed = [ds for _, _, ds in records(capsys.readouterr()[0])]
    with served(["--config", str(cfg)]) as node:
        port = node.dns_port()
        q = dns.message.make_query(ZONE, "DNSKEY", want_dnssec=True)
        resp = dns.query.udp(q, "127.0.0.1", port=port, timeout=5)
    name = dns.name.from_text(ZONE)
    dnskeys = resp.find_rrset(resp.answer, name, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    rrsigs = resp.find_rrset(resp.answer, name, dns.rdataclass.IN, dns.rdatatype.RRSIG,
                             dns.rdatatype.DNSKEY)
    sep = [k for k in dnskeys if k.flags & dns.dnssec.Flag.SEP]
    assert len(dnskeys) == 3 and len(sep) == 2
    assert sorted(map(str, printed)) == sorted(
        str(dns.dnssec.make_ds(ZONE, k, "SHA256")) for k in sep)
    # The key whose DS the parent would hold signs the DNSKEY set.
    ksk = next(k for k in sep if dns.dnssec.make_ds(ZONE, k, "SHA256") == printed[0])
    dns.dnssec.validate(dnskeys, rrsigs, {name: dns.rrset.from_rdata(name, 3600, ksk)})


def _write_public_key(path: Path) -> None:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    path.write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo))


@pytest.mark.parametrize("case", ["unknown zone", "not signed", "missing key", "public key",
                                  "not a key", "broken zone", "bad keys setting"])
def test_ds_refusals(tmp_path: Path, capsys: Capsys, case: str) -> None:
    cfg = site(tmp_path, None if case == "not signed" else
               [{"file": "k.pem", "role": "csk"}],
               config="zones: zones\nkeys: [a, b]\n" if case == "bad keys setting" else "")
    zone = tmp_path / "zones" / "signed.test.yaml"
    keys = tmp_path / "keys"
    keys.mkdir()
    if case in ("unknown zone", "not signed", "broken zone"):
        commands.keygen(keys, "k.pem", 13, Role.CSK)
    elif case == "public key":
        _write_public_key(keys / "k.pem")
    elif case == "not a key":
        (keys / "k.pem").write_text("hello\n")
    if case == "broken zone":
        zone.write_text(zone.read_text().replace("192.0.2.80", "192.0.2.300"))
    asked = "other.test" if case == "unknown zone" else "signed.test"
    assert main(["dnssec", "ds", asked, "--config", str(cfg)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    # The key's file name in the zone: "  - {file: k.pem, role: csk}", line 8, column 12.
    key_line = f"{zone}:8:12: "
    expected = {
        "unknown zone": [f"geodns dnssec ds: no zone other.test. in {tmp_path / 'zones'}"],
        "not signed": [f"geodns dnssec ds: zone signed.test. ({zone}) has no dnssec: "
                       "setting: it is not signed, and its parent needs no DS for it"],
        "missing key": [f"{key_line}key file k.pem is not in the keys directory",
                        f"1 problem(s) found (key files are read from {keys})"],
        "public key": [f"{key_line}key file k.pem: not a PEM private key"],
        "not a key": [f"{key_line}key file k.pem: not a PEM private key"],
        "broken zone": [f"{zone}:5:", "192.0.2.300", "1 problem(s) found"],
        "bad keys setting": [f"{cfg}:2:", "keys", "1 problem(s) found"],
    }[case]
    for part in expected:
        assert part in err, err
    assert "Traceback" not in err


def test_ds_names_the_broken_file_of_the_zone_asked_for(tmp_path: Path, capsys: Capsys) -> None:
    """Other zones' problems are geodns check's business; the zone's own are shown."""
    cfg = site(tmp_path, [{"file": "k.pem", "role": "csk"}])
    keygen(cfg, "k.pem", capsys)
    (tmp_path / "zones" / "other.test.yaml").write_text("records: [\n")
    assert main(["dnssec", "ds", "signed.test", "--config", str(cfg)]) == 0
    assert capsys.readouterr().err == ""
    assert main(["dnssec", "ds", "other.test", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'zones' / 'other.test.yaml'}:2:1: YAML syntax" in err, err
    (tmp_path / "zones" / "twin.yaml").write_text("origin: signed.test.\n" + ZONE_TEXT)
    assert main(["dnssec", "ds", "signed.test", "--config", str(cfg)]) == 1
    assert "zone signed.test. is defined in more than one file" in capsys.readouterr().err


def test_a_fleet_nodes_keys_are_the_fleets(tmp_path: Path, capsys: Capsys) -> None:
    """A fleet node reads no keys directory of its own (geodns publish --keys
    carries the fleet's): keygen and ds need the one publish reads."""
    cfg = site(tmp_path, [{"file": "k.pem", "role": "csk"}],
               config="listen: [127.0.0.1:0]\n"
                      "fleet: {etcd: [http://127.0.0.1:1], node: n1, cache: null}\n")
    fleet_keys = tmp_path / "repo-keys"
    assert main(["dnssec", "keygen", "--config", str(cfg), "k.pem"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geodns dnssec keygen: this node's keys come from the fleet's etcd: "
                          "give --keys DIR"), err
    assert not (tmp_path / "keys").exists()
    keygen(cfg, "k.pem", capsys, "--keys", str(fleet_keys))
    assert (fleet_keys / "k.pem").is_file()
    zones = str(tmp_path / "zones")
    for extra in ([], ["--zones", zones], ["--keys", str(fleet_keys)]):
        assert main(["dnssec", "ds", "signed.test", "--config", str(cfg), *extra]) == 2
        err = capsys.readouterr().err
        assert "give --zones DIR and --keys DIR" in err, err
    assert main(["dnssec", "ds", "signed.test", "--config", str(cfg), "--zones", zones,
                 "--keys", str(fleet_keys)]) == 0
    assert " IN DS " in capsys.readouterr().out
    # keys: in a fleet node's own file is refused, at its line
    cfg.write_text(cfg.read_text() + "keys: keys\n")
    assert main(["dnssec", "keygen", "--config", str(cfg), "--keys", str(fleet_keys),
                 "k2.pem"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{cfg}:3:1: keys: with 'fleet' set, it comes from the fleet store")


def test_refusals_are_exit_statuses_not_tracebacks(tmp_path: Path) -> None:
    """The installed command, as an operator runs it."""
    cfg = site(tmp_path, [{"file": "k.pem", "role": "csk"}])
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k.pem").write_text("not a key\n")
    for argv, code in ((["ds", "signed.test"], 1), (["ds", "nowhere.test"], 1),
                       (["ds", "bad..name"], 2), (["keygen", "k.pem"], 1),
                       (["keygen", "k.txt"], 2)):
        run = subprocess.run([sys.executable, "-m", "geodns", "dnssec", *argv, "--config",
                              str(cfg)], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHONWARNINGS": "error"})
        assert run.returncode == code, (argv, run.stderr)
        assert run.stderr.startswith(("geodns dnssec", str(tmp_path))), run.stderr
        assert "Traceback" not in run.stderr
