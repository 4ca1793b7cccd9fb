"""geodns import-zone on the master files real zones are: never a traceback,
every record it cannot take listed at once at its own line, escaped names,
values that are not UTF-8, the origin from the file, signed zones."""

from __future__ import annotations

from pathlib import Path

import pytest

from geodns.cli import main
from geodns.yamlsrc import Problems
from geodns.zones.loader import load_zone_text

HEAD = "$ORIGIN x.\n$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\n"


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | bytes,
        *args: str) -> tuple[int, str, str]:
    src = tmp_path / "db.x"
    if isinstance(text, bytes):
        src.write_bytes(text)
    else:
        src.write_text(text)
    code = main(["import-zone", str(src), *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def loads(text: str, origin: str = "x.") -> None:
    problems = Problems()
    assert load_zone_text(text, "out.yaml", origin, problems) is not None, \
        [str(p) for p in problems]


def test_caa_value_that_is_not_utf8_round_trips(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(tmp_path, capsys, HEAD + '@ CAA 0 issue "ca\\255.example"\n')
    assert code == 0, err
    assert "!!binary" in out
    problems = Problems()
    zone = load_zone_text(out, "out.yaml", "x.", problems)
    assert zone is not None
    caa = zone.nodes[b"\x01x\x00"][257].rdatas[0]
    assert caa.wire == b"\x00\x05issueca\xff.example"


def test_every_record_it_cannot_take_is_listed_at_once_at_its_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = HEAD + (
        "www A 192.0.2.300\n"                     # 6: does not parse
        "al DNAME y.\n"                           # 7: no DNAME here
        "@ RRSIG A 13 1 300 20300101000000 20200101000000 1234 x. AAAA\n"  # 8
        "ch CH TXT \"chaos\"\n"                   # 9: class CH
        "mx MX ( 10\n"                            # 10: parentheses, two lines
        "        mail.x. )\n"
        "bad SSHFP 1 1 abcd\n"                    # 12: wrong fingerprint length
        "c CNAME www\n"                           # 13: CNAME beside other data
        "c TXT \"other\"\n"                       # 14
        "out.of.zone. A 192.0.2.9\n"              # 15: not in the zone
        "k WKS 192.0.2.1 6 25\n"                  # 16: a type geodns has no name for
        "ok A 192.0.2.2\n"                        # 17
    )
    code, out, err = run(tmp_path, capsys, text)
    assert code == 1 and out == ""
    src = tmp_path / "db.x"
    for line, fragment in ((6, "192.0.2.300"), (7, "DNAME"), (8, "RRSIG"),
                           (9, "class CH"), (12, "fingerprint length"),
                           (13, "CNAME beside other data"), (15, "outside the zone")):
        assert f"{src}:{line}: " in err and fragment in err, (line, err)
    for line in (10, 11, 14, 16, 17):
        assert f"{src}:{line}: " not in err, (line, err)
    assert "(7):" in err  # the count, and every one of them in one run
    code, out, err = run(tmp_path, capsys, text, "--skip-unsupported")
    assert code == 0, err
    assert "left out" in err and f"{src}:13: " in err
    loads(out)
    assert "ok:" in out and "mx:" in out and "TYPE11" in out  # WKS kept, generic
    assert "DNAME" not in out and "RRSIG" not in out and "chaos" not in out


def test_line_numbers_point_at_the_record(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Not one past it, as dnspython's zone reader says after reading the
    end of the line; and the first line of a record in parentheses."""
    text = HEAD + "\n; comment\nwww A 999.1.1.1\nt MX ( 10\n  mail ) extra\n"
    code, _, err = run(tmp_path, capsys, text)
    src = tmp_path / "db.x"
    assert code == 1
    assert f"{src}:8: malformed record: A 999.1.1.1" in err
    assert f"{src}:9: " in err and f"{src}:10: " not in err


def test_escaped_bytes_in_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = HEAD + ('a\\000b TXT "nul"\n\\000 TXT "only a nul"\nsp\\ ace A 192.0.2.7\n'
                   'dot\\.ted CNAME a\\000b\n')
    code, out, err = run(tmp_path, capsys, text)
    assert code == 0, err
    problems = Problems()
    zone = load_zone_text(out, "out.yaml", "x.", problems)
    assert zone is not None, [str(p) for p in problems]
    assert b"\x03a\x00b\x01x\x00" in zone.nodes
    assert b"\x01\x00\x01x\x00" in zone.nodes
    assert b"\x06sp ace\x01x\x00" in zone.nodes
    assert zone.nodes[b"\x07dot.ted\x01x\x00"][5].rdatas[0].target == b"\x03a\x00b\x01x\x00"


def test_origin_from_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(tmp_path, capsys, HEAD)
    assert code == 0, err
    assert "origin: x." in out
    # An absolute SOA owner says it too.
    code, out, err = run(tmp_path, capsys, "$TTL 60\ny. SOA ns1.y. h.y. 1 2 3 4 5\n"
                         "y. NS ns1.y.\nns1.y. A 192.0.2.1\n")
    assert code == 0, err
    assert "origin: y." in out
    # Nothing says it: asked for, not guessed.
    code, out, err = run(tmp_path, capsys, "$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n")
    assert code == 1 and "--origin" in err


def test_signed_zone_keeps_ds_and_keys_and_lists_signatures(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = HEAD + (
        "@ DNSKEY 257 3 15 Hr2qhWkg8fnEa7U0TtMcGt4O0YQFNdpAV0Dv1eEi6Y8=\n"
        "@ RRSIG DNSKEY 15 1 300 20300101000000 20200101000000 44493 x. AAAA\n"
        "@ NSEC sub.x. NS SOA RRSIG NSEC DNSKEY\n"
        "@ NSEC3PARAM 1 0 0 -\n"
        "sub NS ns.sub\n"
        "sub DS 39661 15 2 8dadefc29328ae4001bb56c3f4ccc8c1a3b68c7ed42bacc721425c59a8d092c9\n"
        "sub RRSIG DS 15 2 300 20300101000000 20200101000000 44493 x. AAAA\n"
        "ns.sub A 192.0.2.3\n"
    )
    code, _, err = run(tmp_path, capsys, text)
    assert code == 1 and "(4):" in err
    code, out, err = run(tmp_path, capsys, text, "--skip-unsupported")
    assert code == 0
    assert "DS: 39661 15 2" in out and "DNSKEY:" in out
    assert "RRSIG" not in out and "NSEC" not in out


@pytest.mark.parametrize(("text", "fragment"), [
    (HEAD + 'bad TXT "unclosed\n', "cannot read on"),
    (HEAD.encode() + b'raw TXT "\xff"\n', ":6: bytes that are not UTF-8"),
    (HEAD + "$INCLUDE nowhere.zone\n", "cannot read"),
    (HEAD + "$TTL forever\n", "$TTL"),
    ("www A 192.0.2.1\n", "origin"),
])
def test_broken_files_fail_with_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         text: str | bytes, fragment: str) -> None:
    code, out, err = run(tmp_path, capsys, text)
    assert code == 1 and out == "" and fragment in err, err


def test_include_and_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "hosts.inc").write_text("h1 A 192.0.2.11\nh2 A 192.0.2.12\n")
    text = HEAD + "$INCLUDE hosts.inc\n$GENERATE 1-3 host-$ A 192.0.2.${100,3}\n" \
                  "$GENERATE 0-1/1 r$ PTR host-${1}.x.\n"
    code, out, err = run(tmp_path, capsys, text)
    assert code == 0, err
    for line in ("h1:", "h2:", "host-1:", "host-3:", "192.0.2.101", "192.0.2.103", "r1:",
                 "PTR: host-2"):
        assert line in out, (line, out)


def test_different_ttls_in_one_set_are_served_with_the_lowest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(tmp_path, capsys, HEAD + "w 60 A 192.0.2.1\nw 30 A 192.0.2.2\n"
                         "w 60 A 192.0.2.1\n")
    assert code == 0
    assert "different TTLs" in err and "served once" in err
    assert "ttl: 30" in out
