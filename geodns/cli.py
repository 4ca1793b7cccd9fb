"""``geodns`` command line: serve, check, restart, explain, drain, undrain, node,
publish, fleet, import-zone, dnssec, anycast-exabgp.

Every command that reads a node's configuration takes ``--config FILE`` and
otherwise reads ``./geodns.yaml`` when it is there (:func:`_default_config`);
without either it says which file it looked for and what to give instead
(:func:`_no_config`).  ``publish`` is the exception on purpose: its
``--config`` is the fleet's shared configuration, never a node's file picked
up from the current directory."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geodns import __version__, logs
from geodns.collector import collector_paused
from geodns.config import Config, check_zones_dir, load_config, parse_address, user_problem
from geodns.errors import GeodnsError
from geodns.problems import Problem, Problems, Where
from geodns.zones.loader import ZONE_SUFFIXES, load_zone_file

log = logging.getLogger("geodns")
DEFAULT_CONFIG = "geodns.yaml"


def _setup_logging(level: str, fmt: str = "text") -> None:
    logs.setup(level, fmt)


def _config_from_args(args: argparse.Namespace, problems: Problems) -> Config:
    cfg = load_config(Path(args.config), problems) if args.config is not None else Config(path=None)
    if getattr(args, "listen", None):
        cfg.listen = []
        for text in args.listen:
            try:
                cfg.listen.append(parse_address(text))
            except ValueError as exc:
                problems.add(Where("--listen", 1, 1), str(exc))
        cfg.overrides["listen"] = list(cfg.listen)
    if getattr(args, "zones", None):
        cfg.zones_dir = cfg.overrides["zones_dir"] = Path(args.zones)
    if getattr(args, "workers", None):
        cfg.workers = cfg.overrides["workers"] = args.workers
    user = getattr(args, "user", None)
    if user is not None:
        user_problem(user, Where("--user", 1, 1), problems, "--user")
        cfg.user = cfg.overrides["user"] = user
    return cfg


def _default_config(args: argparse.Namespace) -> str | None:
    """``--config``; else ``./geodns.yaml`` when it exists, unless ``--zones``
    says the command line is the whole configuration."""
    if args.config is not None:
        return str(args.config)
    if getattr(args, "zones", None):
        return None
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None


def _no_config(command: str, instead: str) -> str:
    """What a command says when it found no configuration: the file it looked
    for, and how to give one (or what can stand in for one)."""
    return (f"geodns {command}: no configuration: there is no {DEFAULT_CONFIG} in "
            f"{Path.cwd()}; give --config FILE{instead}")


def validate(cfg: Config, problems: Problems, keep: bool = False) -> int:
    """Everything ``geodns check`` checks, which is also what ``geodns serve``
    refuses to start with: the zones directory, every zone file (against the
    configuration's PoPs), one file per zone, and the GeoIP database when
    PoPs are configured.  Returns how many zones load.  With ``keep`` (serve)
    the zones are kept for the first snapshot, which then does not load them
    again."""
    if cfg.fleet is not None:
        # Zones and PoPs come from the fleet store; the GeoIP database the
        # fleet's PoPs will need is this node's own.
        from geodns.snapshot import open_geoip

        locator, error = open_geoip(cfg, wanted=True)
        if locator is None:
            where = Where(str(cfg.path) if cfg.path else "<command line>", 1, 1)
            problems.add(where, f"GeoIP database: {error}")
        return 0
    check_zones_dir(cfg, problems)
    origins: dict[bytes, str] = {}
    count = 0
    try:
        paths = sorted(cfg.zones_dir.iterdir())
    except OSError:
        paths = []  # check_zones_dir has said why
    for path in paths:
        if not (path.is_file() and path.name.endswith(ZONE_SUFFIXES)) or \
                path.name.startswith("."):
            continue
        with collector_paused():
            zone = load_zone_file(path, problems, pops=cfg.pops,
                                  check_defaults=cfg.check_defaults, keep=keep)
        if zone is None:
            continue
        if zone.dnssec is not None:
            from geodns.dnssec.policy import read_keys, resolve

            if resolve(zone.dnssec, read_keys(cfg.keys_dir, problems), problems) is None:
                continue
        count += 1
        if zone.origin in origins:
            problems.add(Where(str(path), 1, 1),
                         f"zone {zone.name} is also defined in {origins[zone.origin]}")
        origins[zone.origin] = str(path)
    if cfg.pops:
        from geodns.snapshot import open_geoip

        locator, error = open_geoip(cfg)
        if locator is None:
            where = Where(str(cfg.path) if cfg.path else "<command line>", 1, 1)
            problems.add(where, f"GeoIP database: {error}")
    return count


def _sorted(problems: Problems) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.where.file, p.where.line, p.where.column))


def cmd_serve(args: argparse.Namespace) -> int:
    from geodns import early

    early.install()  # a SIGHUP while starting must not kill the process
    problems = Problems()
    args.config = _default_config(args)
    if args.config is None and not args.zones:
        logs.setup(args.log_level or "info", args.log_format or "text")
        log.error("%s", _no_config("serve", ", or --zones DIR to serve a zones directory "
                                             "with the defaults"))
        return 2
    cfg = _config_from_args(args, problems)
    # The command line's log settings hold in every worker and across reloads.
    if args.log_level:
        cfg.log_level = cfg.overrides["log_level"] = args.log_level
    if args.log_format:
        cfg.log_format = cfg.overrides["log_format"] = args.log_format
    if args.lameduck is not None:
        if args.lameduck < 0:
            problems.add(Where("--lameduck", 1, 1), "--lameduck: give 0 or more seconds")
        cfg.lameduck = cfg.overrides["lameduck"] = args.lameduck
    logs.setup(cfg.log_level, cfg.log_format)
    if cfg.user is not None:
        if problems and os.geteuid() == 0:  # an unknown user: nothing more is read as root
            _refuse(problems, "zones and GeoIP database not read: they are read as the "
                    "configured user only")
            return 2
        if not problems:
            code = _become_user(cfg)
            if code is not None:
                return code
    validate(cfg, problems, keep=True)  # every problem, as geodns check lists them
    if problems:
        _refuse(problems, "geodns check lists the same")
        return 2
    from geodns.server.supervisor import run

    log.info("geodns %s starting (zones from %s)", __version__,
             f"the fleet store, as node {cfg.fleet.node}" if cfg.fleet else cfg.zones_dir,
             extra={"event": "start", "version": __version__, "zones": str(cfg.zones_dir),
                    "workers": cfg.workers})
    return run(cfg, takeover_fd=args.takeover_fd)


def _refuse(problems: Problems, note: str) -> None:
    for p in _sorted(problems):
        log.error("%s", p, extra={"event": "config-error"})
    log.error("not starting: %d problem(s) (%s)", len(problems), note)


def _become_user(cfg: Config) -> int | None:
    """``user``: run as that user from here on, keeping only the privilege of
    binding ports below 1024, before anything the configuration names is read
    (zones, GeoIP database; the configuration file itself was read as
    started).  Then check that the user can use every file the node needs
    later.  The exit status when the node cannot start so, else None."""
    import tempfile

    import geodns
    from geodns import privileges

    assert cfg.user is not None
    try:
        run_as = privileges.resolve(cfg.user)
        changed = privileges.become(run_as)
    except ValueError as exc:
        log.error("not starting: user %s: %s", cfg.user, exc, extra={"event": "user-error"})
        return 2
    except GeodnsError as exc:
        log.error("not starting: %s", exc, extra={"event": "user-error"})
        return exc.exit_status
    read = [("the Python library", Path(os.__file__).parent),
            ("geodns's code", Path(geodns.__file__).parent)]
    if cfg.path is not None:  # read again on every reload, and by a restart's successor
        read.append(("the configuration file", cfg.path))
    write = [(what, path) for what, path in (
        ("admin state_file", cfg.state_file),
        ("fleet cache", cfg.fleet.cache if cfg.fleet is not None else None),
        ("lifecycle control_socket", cfg.control_socket)) if path is not None]
    if cfg.workers > 1:
        write.append(("the workers' run directory",
                      Path(tempfile.gettempdir()) / "geodns-workers-"))
    missing = privileges.unusable(run_as, read, write,
                                  [("Python (geodns restart runs it)", Path(sys.executable))])
    for line in missing:
        log.error("%s", line, extra={"event": "user-error"})
    if missing:
        log.error("not starting: running as user %s, geodns cannot use %d file(s) it needs "
                  "(docs/deploy.md, Port 53 and users)", run_as.user, len(missing))
        return 2
    log.info("running as %s%s", run_as,
             ", with no capability but CAP_NET_BIND_SERVICE" if changed else
             " (started so)", extra={"event": "user", "user": run_as.user, "uid": run_as.uid,
                                     "group": run_as.group, "gid": run_as.gid})
    return None


def cmd_restart(args: argparse.Namespace) -> int:
    """Ask the running node (its control socket) to start its successor and
    hand it the sockets; report the outcome."""
    from geodns.server.control import request

    path = Path(args.control) if args.control else None
    if path is None:
        problems = Problems()
        args.config = _default_config(args)
        if args.config is None:
            print(_no_config("restart", ", or --control PATH (the node's control socket)"),
                  file=sys.stderr)
            return 2
        cfg = load_config(Path(args.config), problems)
        if problems:
            for p in _sorted(problems):
                print(p, file=sys.stderr)
            return 2
        path = cfg.control_socket
        if path is None:
            print("geodns restart: lifecycle.control_socket is null: send SIGUSR2 to the "
                  "node instead", file=sys.stderr)
            return 2
    try:
        answer = request(path, {"restart": True}, timeout=600)
    except (OSError, ValueError) as exc:
        print(f"geodns restart: no node answers on {path}: {exc}", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"geodns restart: not restarted: {answer.get('error')} (process "
              f"{answer.get('pid')} goes on serving)", file=sys.stderr)
        return 1
    print(f"restarted: process {answer['pid']} serves now (process {answer['replaced']} "
          "stops once its TCP connections are quiet)")
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    """``geodns node drain|undrain``: this node's anycast routes, through its
    admin API."""
    args.config = _default_config(args)
    if args.config is None and args.admin is None:
        print(_no_config(f"node {args.action}", ", or --admin URL (the node's admin API)"),
              file=sys.stderr)
        return 2
    answer = _admin_post(args, f"node {args.action}", f"/node/{args.action}",
                         {"who": args.who, "why": args.why})
    if isinstance(answer, int):
        return answer
    state = "announced" if answer.get("announced") else "withdrawn"
    print(f"node {'drained' if answer.get('drained') else 'undrained'}: routes {state}")
    return 0


def cmd_anycast_exabgp(args: argparse.Namespace) -> int:
    """The process ExaBGP runs: follow the node's anycast decisions."""
    from geodns.exabgp import follow

    path = Path(args.control) if args.control else None
    if path is None:
        args.config = _default_config(args)
        if args.config is None:
            print(_no_config("anycast-exabgp", ", or --control PATH --prefix PREFIX ..."),
                  file=sys.stderr)
            return 2
        problems = Problems()
        cfg = load_config(Path(args.config), problems)
        if problems or cfg.control_socket is None or cfg.anycast is None:
            for p in _sorted(problems):
                print(p, file=sys.stderr)
            print("geodns anycast-exabgp: the configuration needs 'anycast' and a control "
                  "socket (or give --control PATH --prefix ...)", file=sys.stderr)
            return 2
        path = cfg.control_socket
        prefixes = list(cfg.anycast.prefixes)
    else:
        prefixes = list(args.prefix or [])
    return follow(path, prefixes, grace=args.grace, next_hop=args.next_hop,
                  next_hop6=args.next_hop6)


def cmd_check(args: argparse.Namespace) -> int:
    problems = Problems()
    args.config = _default_config(args)
    if args.config is None and not args.zones:
        print(_no_config("check", ", or --zones DIR to check a zones directory alone"),
              file=sys.stderr)
        return 2
    cfg = _config_from_args(args, problems)
    count = validate(cfg, problems)
    for p in _sorted(problems):
        print(p, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    if cfg.fleet is not None:
        print(f"configuration OK: node {cfg.fleet.node} of the fleet at "
              f"{', '.join(cfg.fleet.etcd)} (prefix {cfg.fleet.prefix}); its zones come from "
              "there")
    else:
        print(f"configuration OK: {count} zone(s) in {cfg.zones_dir}")
    return 0


def cmd_import_zone(args: argparse.Namespace) -> int:
    from geodns.zones.bindimport import ImportError_, convert

    try:
        # The conversion loads its output back and traces every problem to
        # the line of the master file it came from.
        text, warnings = convert(Path(args.file), args.origin, args.skip_unsupported)
    except ImportError_ as exc:
        print(f"geodns import-zone: {exc}", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"geodns import-zone: warning: {w}", file=sys.stderr)
    sys.stdout.write(text)
    return 0


def cmd_dnssec(args: argparse.Namespace) -> int:
    """``geodns dnssec keygen`` and ``geodns dnssec ds``
    (geodns/dnssec/commands.py does the work)."""
    command = f"dnssec {args.action}"
    # --keys (keygen) or --zones (ds) without --config: the command line is
    # the whole configuration, as with geodns check --zones.
    alone = args.keys if args.action == "keygen" else args.zones
    args.config = _default_config(args) if args.config or not alone else None
    if args.config is None and not alone:
        instead = ", or --keys DIR" if args.action == "keygen" else ", or --zones DIR"
        print(_no_config(command, instead), file=sys.stderr)
        return 2
    problems = Problems()
    cfg = _config_from_args(args, problems)
    if args.keys:
        cfg.keys_dir = Path(args.keys)
    if problems:  # a keys: the file gets wrong is not quietly replaced by the default
        return _report(problems)
    try:
        return (_dnssec_keygen if args.action == "keygen" else _dnssec_ds)(args, cfg)
    except GeodnsError as exc:
        print(f"geodns {command}: {exc}", file=sys.stderr)
        return exc.exit_status


def _report(problems: Problems, note: str = "") -> int:
    """Every problem as file:line:column: message, then how many: exit 1."""
    for p in _sorted(problems):
        print(p, file=sys.stderr)
    print(f"{len(problems)} problem(s) found{note}", file=sys.stderr)
    return 1


def _dnssec_keygen(args: argparse.Namespace, cfg: Config) -> int:
    from geodns.dnssec import commands
    from geodns.dnssec.keys import ALGORITHMS, Role

    commands.check_file_name(args.file)
    if cfg.fleet is not None and not args.keys:
        raise commands.UsageError("this node's keys come from the fleet's etcd: give --keys "
                                  "DIR, the keys directory geodns publish --keys reads")
    named = commands.role_from_name(args.file)
    role = Role(args.role) if args.role else named or Role.CSK
    key = commands.keygen(cfg.keys_dir, args.file, ALGORITHMS[args.algorithm], role)
    print(f"wrote {cfg.keys_dir / args.file}: algorithm {key.algorithm} ({args.algorithm}), "
          f"key tag {key.tag} as a {role.value}")
    if args.role and named is not None and named is not role:
        print(f"note: the file name says {named.value}, --role says {role.value}: the zone's "
              "role decides (and the key tag changes with it)")
    print("add it to the zone's dnssec: keys:")
    print(f"    - {{file: {args.file}, role: {role.value}}}")
    if key.signs_keys:
        print("then 'geodns dnssec ds ZONE' prints its DS records for the parent")
    mode = commands.loose_permissions(cfg.keys_dir)
    if mode is not None:
        print(f"geodns dnssec keygen: warning: others than its owner may enter the keys "
              f"directory {cfg.keys_dir} (mode {mode:04o}): chmod 700 {cfg.keys_dir}",
              file=sys.stderr)
    return 0


def _dnssec_ds(args: argparse.Namespace, cfg: Config) -> int:
    from geodns.dnssec import commands

    origin = commands.zone_origin(args.zone)
    if cfg.fleet is not None and not (args.zones and args.keys):
        raise commands.UsageError("this node's zones and keys come from the fleet's etcd: "
                                  "give --zones DIR and --keys DIR, the directories geodns "
                                  "publish reads")
    problems = Problems()
    zone = commands.find_zone(cfg, origin, problems)
    if zone is None:
        return _report(problems)
    keys = commands.zone_keys(cfg, zone, problems)
    if keys is None:
        return _report(problems, f" (key files are read from {cfg.keys_dir})")
    for line in commands.parent_records(origin, keys, commands.DIGEST_TYPES[args.digest],
                                        args.dnskey):
        print(line)
    for k in keys:
        if k.key.signs_keys and not k.sign:
            print(f"geodns dnssec ds: note: key {k.key.tag} does not sign (sign: false): its "
                  "DS goes to the parent before the key signs, and away once it is retired",
                  file=sys.stderr)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Ask the running node (its admin API) how it answers now; when it cannot
    be reached, work it out from the configuration and the drains in the
    state file, and say plainly that live health is not included."""

    problems = Problems()
    args.config = _default_config(args)
    if args.config is None and not args.zones:
        print(_no_config("explain", ", or --zones DIR (and --admin URL to ask a running "
                                     "node)"), file=sys.stderr)
        return 2
    cfg = _config_from_args(args, problems)
    if cfg.fleet is None:  # a fleet's zones are in etcd (and the node's copy of them)
        check_zones_dir(cfg, problems)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        return 2
    base = args.admin or (f"http://{cfg.admin}" if cfg.admin is not None else None)
    offline = ("showing what this configuration would serve, with the drains in the state "
               "file but WITHOUT live health")
    if base is None or args.offline:
        note = offline + (" (no admin address configured)" if base is None else "")
    else:
        query = {"name": args.name, "type": args.type, "client": args.client}
        if args.ecs:
            query["ecs"] = args.ecs
        try:
            result = _call_admin(f"{base.rstrip('/')}/explain?"
                                 f"{urllib.parse.urlencode(query)}")
        except AdminRefused as exc:
            if exc.status != 400:  # not a question the node refuses: it is not serving
                return _explain_offline(args, cfg, f"the node at {base} did not answer "
                                        f"(HTTP {exc.status}): {offline}")
            print(f"geodns explain: {exc.message}", file=sys.stderr)
            return 2
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            note = f"the node at {base} did not answer ({reason}): {offline}"
        else:
            result["live"] = True
            result["node"] = base
            _print_explanation(result, args.json, f"as served now by the node at {base} "
                               "(live health and drains)")
            return 0
    return _explain_offline(args, cfg, note)


def _explain_offline(args: argparse.Namespace, cfg: Config, note: str) -> int:
    from geodns import state as state_file
    from geodns.explain import ExplainError, explain
    from geodns.health.states import State
    from geodns.health.view import HealthView
    from geodns.server.app import offline_snapshot

    _setup_logging("error")
    drains = {p: State(s) for p, s in state_file.load(cfg.state_file).items()} \
        if cfg.state_file is not None else {}
    snap = offline_snapshot(cfg, HealthView(admin=drains))
    for p in snap.errors():
        print(f"warning: {p}", file=sys.stderr)
    try:
        result = explain(snap.responder, args.name, args.type, args.client, args.ecs)
    except ExplainError as exc:
        print(f"geodns explain: {exc}", file=sys.stderr)
        return 2
    result["live"] = False
    result["note"] = note
    _print_explanation(result, args.json, note)
    return 0


def _print_explanation(result: dict[str, Any], as_json: bool, note: str) -> None:
    from geodns.explain import render

    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(f"({note})")
        print(render(result))


class AdminRefused(GeodnsError):
    """The admin API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message


def _call_admin(url: str, token: str | None = None,
                body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A request to a node's admin API (POST, with ``body`` as JSON, when a
    token is given): the JSON it answers.  Raises :class:`AdminRefused` for an
    error status (with the API's own ``error`` text) and URLError/OSError when
    the node is not there."""
    import urllib.request  # (with http.client and ssl: not for geodns serve)

    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data,
                                 method="POST" if token is not None else "GET",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc
    except urllib.error.HTTPError as exc:
        try:
            message = str(json.loads(exc.read()).get("error", exc.reason))
        except ValueError:
            message = str(exc.reason)
        raise AdminRefused(exc.code, message) from None


def _etcd_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--etcd", action="append", required=required, metavar="URL",
                   help="an etcd client URL (repeat it, or separate with commas, for every "
                        "member)")
    p.add_argument("--prefix", default="/geodns/", help="the fleet's key prefix (/geodns/)")


def _etcd(args: argparse.Namespace) -> tuple[Any, Any]:
    from geodns.fleet.etcd import Etcd
    from geodns.fleet.keys import Layout
    from geodns.fleet.publish import CLIENT_TIMEOUT, RETRY_FOR

    urls = [u.strip() for arg in args.etcd for u in arg.split(",") if u.strip()]
    if not (args.prefix.startswith("/") and args.prefix.endswith("/")):
        raise GeodnsError(f"--prefix {args.prefix!r} must start and end with '/'")
    # Rides through a leader election: every member tried again for RETRY_FOR s.
    return Etcd(urls, timeout=CLIENT_TIMEOUT, retry_for=RETRY_FOR), Layout(args.prefix)


def cmd_publish(args: argparse.Namespace) -> int:
    """Validate the fleet's shared configuration and zones, then write every
    change in one compare-and-swap transaction."""
    import asyncio

    from geodns.fleet import publish as pub
    from geodns.fleet.etcd import EtcdError

    if args.config is None and args.zones is None and args.keys is None:
        print("geodns publish: give --config FILE (the fleet's shared configuration), a "
              "zones directory, --keys DIR (its DNSSEC keys), or several", file=sys.stderr)
        return 2
    problems = Problems()
    config_path = Path(args.config) if args.config else None
    zones_dir = Path(args.zones) if args.zones else None
    keys_dir = Path(args.keys) if args.keys else None
    local = pub.read_local(config_path, zones_dir, problems, keys_dir)

    async def run() -> int:
        etcd, layout = _etcd(args)
        try:
            plan, state = await pub.plan(etcd, layout, local)
            config = (str(config_path), local.config) if local.config is not None else \
                ((layout.document_name(layout.config), state.config_text())
                 if state.config_text() is not None else None)
            if local.zones is not None:
                assert zones_dir is not None
                zones = {n: (str(zones_dir / n), b) for n, b in local.zones.items()}
            else:
                zones = {n: (layout.document_name(layout.zone(n)), b)
                         for n, b in state.zone_texts().items()}
            keys = local.keys if local.keys is not None else state.key_texts()
            pub.validate(config, zones, problems, keys)  # type: ignore[arg-type]
            if problems:
                for p in _sorted(problems):
                    print(p, file=sys.stderr)
                print(f"{len(problems)} problem(s): nothing published", file=sys.stderr)
                return 2
            if plan.empty:
                print(f"nothing to publish: etcd already holds this (etcd:{state.docs_revision})")
                return 0
            for line in plan.lines:
                print(line)
            if args.dry_run:
                print(f"dry run: {len(plan.lines)} change(s) not written")
                return 0
            try:
                revision = await pub.apply(etcd, layout, plan, args.who or pub.who_am_i(),
                                           args.message or "")
            except pub.Stale as exc:
                last = plan.published
                if exc.doubtful:
                    print(f"geodns publish: etcd changed since it was read at revision "
                          f"{plan.revision}, and an earlier attempt of this transaction went "
                          "unanswered (etcd did not answer in time): whether it was applied "
                          "before that change cannot be told; nothing more was written: see "
                          "geodns fleet, and run it again (it says \"nothing to publish\" "
                          "if etcd holds this)", file=sys.stderr)
                    return 3
                print(f"geodns publish: etcd changed since it was read at revision "
                      f"{plan.revision} (last publish by {last.get('who', '?')}); nothing "
                      "was written: run it again to publish on top of the newer state",
                      file=sys.stderr)
                return 3
            except EtcdError as exc:
                print(f"geodns publish: {exc}", file=sys.stderr)
                if exc.doubtful:
                    print("geodns publish: the transaction may or may not have been applied "
                          "(all of it or nothing: it is one transaction): see geodns fleet, "
                          "or run it again (it says \"nothing to publish\" if etcd holds "
                          "this)", file=sys.stderr)
                else:
                    print("geodns publish: nothing was written", file=sys.stderr)
                return 1
            except ValueError as exc:
                print(f"geodns publish: {exc}", file=sys.stderr)
                return 2
            print(f"published etcd:{revision}")
            return 0
        finally:
            await etcd.close()

    try:
        return asyncio.run(run())
    except (EtcdError, GeodnsError) as exc:
        for p in _sorted(problems):
            print(p, file=sys.stderr)
        print(f"geodns publish: {exc}", file=sys.stderr)
        if isinstance(exc, EtcdError):  # while reading: before any write
            print("geodns publish: nothing was written", file=sys.stderr)
        return 1


def cmd_fleet(args: argparse.Namespace) -> int:
    """Every node of the fleet: what it serves, whether it is behind."""
    import asyncio
    import time

    from geodns.fleet.etcd import EtcdError
    from geodns.fleet.keys import FleetState
    from geodns.fleet.publish import describe

    async def run() -> int:
        etcd, layout = _etcd(args)
        try:
            state = FleetState(layout)
            state.load(await etcd.range_prefix(layout.root))
        finally:
            await etcd.close()
        if args.json:
            from geodns.fleet.keys import behind

            newest = state.newest
            print(json.dumps({
                "newest_revision": newest, "published": state.published(),
                "nodes": {n: dict(d, behind=behind(d, newest)) for n, d in state.nodes.items()},
                "drains": {p: d.to_json() for p, d in state.drains.items()},
                "votes": {n: v.to_json() for n, v in state.votes.items()}}, indent=2))
            return 0
        lines, flagged = describe(state, time.time())
        print("\n".join(lines))
        return 1 if flagged and args.check else 0

    try:
        return asyncio.run(run())
    except (EtcdError, GeodnsError) as exc:
        print(f"geodns fleet: {exc}", file=sys.stderr)
        return 1


def _fleet_drain(args: argparse.Namespace) -> int:
    import asyncio

    from geodns.fleet.etcd import EtcdError
    from geodns.fleet.keys import Drain
    from geodns.fleet.member import write_drain
    from geodns.fleet.publish import who_am_i
    from geodns.health.states import DRAINING

    async def run() -> str:
        etcd, layout = _etcd(args)
        try:
            if args.command == "drain":
                d = Drain.now(DRAINING, args.who or who_am_i(), args.why or "")
                await write_drain(etcd, layout, args.pop, d)
                return f"PoP {args.pop}: draining on every node of the fleet ({d.who})"
            await write_drain(etcd, layout, args.pop, None)
            return f"PoP {args.pop}: fleet-wide drain removed"
        finally:
            await etcd.close()

    try:
        print(asyncio.run(run()))
    except (EtcdError, GeodnsError) as exc:
        print(f"geodns {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _admin_post(args: argparse.Namespace, what: str, path: str,
                body: dict[str, Any] | None = None) -> dict[str, Any] | int:
    """POST ``path`` to the node the command line names (``--admin``, else
    the configuration's admin.listen; ``--token``, GEODNS_ADMIN_TOKEN or the
    configuration's): its answer, or the exit status after saying why not."""
    import os

    problems = Problems()
    cfg = _config_from_args(args, problems)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        return 2
    base = args.admin
    if base is None:
        if cfg.admin is None:
            print(f"geodns {what}: no admin address: set admin.listen in the configuration "
                  "or give --admin http://HOST:PORT", file=sys.stderr)
            return 2
        base = f"http://{cfg.admin}"
    token = args.token or os.environ.get("GEODNS_ADMIN_TOKEN") or cfg.admin_token
    try:
        return _call_admin(f"{base.rstrip('/')}{path}", token or "", body)
    except AdminRefused as exc:
        print(f"geodns {what}: {exc}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"geodns {what}: cannot reach the admin API at {base}: {exc}", file=sys.stderr)
        return 1


def cmd_drain(args: argparse.Namespace) -> int:
    """POST /pops/{id}/drain (or undrain) to the running server's admin API,
    or with --etcd a fleet-wide drain."""
    if args.etcd:
        return _fleet_drain(args)
    action = "drain" if args.command == "drain" else "undrain"
    args.config = _default_config(args)
    if args.config is None and args.admin is None:
        print(_no_config(action, ", or --admin URL (the node's admin API), or --etcd URL "
                                 "for a fleet-wide drain"), file=sys.stderr)
        return 2
    body = _admin_post(args, action, f"/pops/{args.pop}/{action}")
    if isinstance(body, int):
        return body
    print(f"PoP {body['pop']}: {body['old']} -> {body['state']}")
    return 0


ABOUT = """\
geodns is an authoritative DNS server that answers every client with its
closest healthy point of presence (PoP): zones are YAML files, clients are
placed by their address or EDNS Client Subnet, active health checks move them
off a failed PoP, and an admin API serves Prometheus metrics, a status page
and drains."""

# Every command, in the groups `geodns --help` shows, each with its one line.
COMMANDS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("Run a node", (
        ("serve", "run the DNS server in the foreground"),
        ("check", "validate the configuration and every zone, then exit"),
        ("restart", "replace the running node by a new process; no query lost"),
    )),
    ("Operate a running node", (
        ("explain", "show why a client gets its answer (asks the node when it can)"),
        ("drain", "stop sending clients to a PoP (with --etcd: fleet-wide)"),
        ("undrain", "let a drained PoP take clients again"),
        ("node", "take this node out of anycast (drain) or back in (undrain)"),
    )),
    ("A fleet sharing etcd", (
        ("publish", "validate the fleet's configuration and zones, write to etcd"),
        ("fleet", "list the fleet's nodes: what each serves, which are behind"),
    )),
    ("Tools", (
        ("import-zone", "convert a BIND zone file to geodns YAML (on stdout)"),
        ("dnssec", "make signing keys; print a zone's DS records for its parent"),
        ("anycast-exabgp", "run by ExaBGP: announce this node's prefixes while it is fit"),
    )),
)

EPILOG = f"""\
Run 'geodns COMMAND --help' for a command's options.  Commands that read a
node's configuration take --config FILE, or read ./{DEFAULT_CONFIG} when it
is there.

Documentation: README.md and docs/ in geodns's source tree; every setting
and command is in docs/configuration.md."""


def _command_list() -> str:
    width = max(len(name) for _, group in COMMANDS for name, _ in group) + 2
    lines = []
    for title, group in COMMANDS:
        lines += ["", f"{title}:"]
        lines += [f"  {name:<{width}}{summary}" for name, summary in group]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geodns", usage="geodns [--version] [--help] COMMAND [ARGS]",
        description=ABOUT + "\n" + _command_list(), epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"geodns {__version__}",
                        help="print the version and exit")
    # The commands are listed, grouped, in the description: no {a,b,c} blob.
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help=argparse.SUPPRESS)
    summaries = {name: summary for _, group in COMMANDS for name, summary in group}

    def command(name: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, prog=f"geodns {name}",
                              description=summaries[name][0].upper() + summaries[name][1:] + ".")

    def config_arg(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--config", "-c", metavar="FILE",
                       help=f"{what} (default: ./{DEFAULT_CONFIG} when it is there)")

    def server_args(p: argparse.ArgumentParser) -> None:
        config_arg(p, "the server configuration (YAML)")
        p.add_argument("--listen", action="append", metavar="ADDR:PORT",
                       help="listen address, repeatable ([::1]:5300 for IPv6); replaces the "
                            "config's list")
        p.add_argument("--zones", metavar="DIR", help="zones directory (overrides the config)")

    p = command("serve")
    server_args(p)
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (SO_REUSEPORT)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=logs.FORMATS,
                   help="one line of text or one JSON object per event (overrides the config)")
    p.add_argument("--lameduck", type=float, metavar="SECONDS",
                   help="on SIGTERM, answer this long while not ready before stopping "
                        "(overrides lifecycle.lameduck)")
    p.add_argument("--user", metavar="USER[:GROUP]",
                   help="started as root, run as this user (and group) before reading any "
                        "zone, keeping only the right to bind port 53 (overrides the config's "
                        "user)")
    p.add_argument("--takeover-fd", type=int, help=argparse.SUPPRESS)  # geodns restart's
    p.set_defaults(func=cmd_serve)

    p = command("node")
    p.add_argument("action", choices=["drain", "undrain"])
    config_arg(p, "the node's configuration (admin address, token)")
    p.add_argument("--admin", metavar="URL", help="admin API, e.g. http://127.0.0.1:8053")
    p.add_argument("--token", help="bearer token (or GEODNS_ADMIN_TOKEN)")
    p.add_argument("--who", help="who drains (kept with the drain)")
    p.add_argument("--why", help="why (kept with the drain)")
    p.set_defaults(func=cmd_node)

    p = command("anycast-exabgp")
    config_arg(p, "the node's configuration")
    p.add_argument("--control", metavar="PATH", help="the node's control socket")
    p.add_argument("--prefix", action="append", help="with --control: a prefix (repeat)")
    p.add_argument("--grace", type=float, default=1.0, help="seconds without a word from "
                   "the node (dead or hung) before withdrawing (1)")
    p.add_argument("--next-hop", default="self", help="the next hop announced (self)")
    p.add_argument("--next-hop6", help="the next hop of IPv6 prefixes when the session is "
                   "IPv4 (an IPv6 address of this node; default: --next-hop)")
    p.set_defaults(func=cmd_anycast_exabgp)

    p = command("restart")
    config_arg(p, "the node's configuration (where its control socket is)")
    p.add_argument("--control", metavar="PATH", help="the control socket (default: "
                   "lifecycle.control_socket)")
    p.set_defaults(func=cmd_restart)

    p = command("check")
    server_args(p)
    p.set_defaults(func=cmd_check)

    p = command("explain")
    server_args(p)
    p.add_argument("--admin", metavar="URL", help="the node's admin API (default: the "
                   "configuration's admin.listen)")
    p.add_argument("--offline", action="store_true",
                   help="do not ask the node: use the configuration and the state file")
    p.add_argument("name")
    p.add_argument("type", nargs="?", default="A")
    p.add_argument("--client", required=True, help="the address the query comes from")
    p.add_argument("--ecs", metavar="SUBNET", help="an EDNS Client Subnet, e.g. 200.160.0.0/24")
    p.add_argument("--json", action="store_true", help="the same as JSON")
    p.set_defaults(func=cmd_explain)

    for name in ("drain", "undrain"):
        p = command(name)
        p.add_argument("pop", help="the PoP, by its name in the configuration's pops")
        config_arg(p, "the node's configuration (admin address, token)")
        p.add_argument("--admin", metavar="URL", help="admin API, e.g. http://127.0.0.1:8053")
        p.add_argument("--token", help="bearer token (or GEODNS_ADMIN_TOKEN)")
        _etcd_args(p, required=False)
        p.add_argument("--who", help="who drains (default: USER@HOST), kept with the drain")
        p.add_argument("--why", help="why, kept with the drain")
        p.set_defaults(func=cmd_drain)

    p = command("publish")
    _etcd_args(p, required=True)
    p.add_argument("--config", "-c", metavar="FILE", help="the fleet's shared configuration "
                   "(health, pops, default_order, latency); no default: without it the "
                   "fleet's configuration stays as it is")
    p.add_argument("zones", nargs="?", help="the zones directory (zones no longer in it are "
                   "deleted from the fleet)")
    p.add_argument("--keys", metavar="DIR", help="the DNSSEC keys directory (its *.pem "
                   "files; keys no longer in it are deleted from the fleet); no default: "
                   "without it the fleet's keys stay as they are")
    p.add_argument("--dry-run", action="store_true", help="show what would change; write "
                   "nothing")
    p.add_argument("--who", help="who publishes (default: USER@HOST)")
    p.add_argument("--message", "-m", help="why (a commit message, say)")
    p.set_defaults(func=cmd_publish)

    p = command("fleet")
    _etcd_args(p, required=True)
    p.add_argument("--json", action="store_true", help="everything as JSON")
    p.add_argument("--check", action="store_true", help="exit 1 when a node is behind, "
                   "refuses the newest revision or has errors")
    p.set_defaults(func=cmd_fleet)

    p = command("import-zone")
    p.add_argument("file")
    p.add_argument("--origin", help="the zone's origin, e.g. example.com. (default: the "
                   "file's $ORIGIN, or its SOA's owner)")
    p.add_argument("--skip-unsupported", action="store_true",
                   help="leave out the records geodns cannot take (listed with their lines) "
                   "instead of failing")
    p.set_defaults(func=cmd_import_zone)

    _dnssec_parser(command("dnssec"), config_arg)
    return parser


DNSSEC_ACTIONS = (
    ("keygen", "write a new private key into the keys directory"),
    ("ds", "print the DS records of a zone's key-signing keys, for its parent"),
)


def _dnssec_parser(p: argparse.ArgumentParser,
                   config_arg: Callable[[argparse.ArgumentParser, str], None]) -> None:
    from geodns.dnssec.commands import DIGEST_TYPES
    from geodns.dnssec.keys import ALGORITHMS

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.usage = "geodns dnssec [-h] ACTION [ARGS]"
    p.description = (f"{p.description}\n\nactions:\n" + "\n".join(
        f"  {name:<8}{summary}" for name, summary in DNSSEC_ACTIONS) +
        "\n\nRun 'geodns dnssec ACTION --help' for an action's options; docs/dnssec.md "
        "says\nhow keys, DS records and rollovers go together.")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                           help=argparse.SUPPRESS)
    summaries = dict(DNSSEC_ACTIONS)

    def action(name: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, prog=f"geodns dnssec {name}",
                              description=summaries[name][0].upper() + summaries[name][1:] +
                              ".")

    def keys_arg(q: argparse.ArgumentParser) -> None:
        q.add_argument("--keys", metavar="DIR", help="the keys directory (overrides the "
                       "configuration's keys)")

    q = action("keygen")
    q.add_argument("file", metavar="NAME.pem", help="the key file's name in the keys "
                   "directory, as the zone's dnssec: keys: will name it")
    config_arg(q, "the node's configuration (where its keys directory is)")
    keys_arg(q)
    q.add_argument("--algorithm", choices=list(ALGORITHMS), default="ecdsap256sha256",
                   help="ecdsap256sha256 (13, the default: every validator has it) or "
                        "ed25519 (15)")
    q.add_argument("--role", choices=["ksk", "zsk", "csk"],
                   help="the role the zone gives it: ksk, zsk or csk (default: the one the "
                        "file name says, as in example.com.ksk.pem; else csk); the key tag "
                        "printed is for this role")
    q.set_defaults(func=cmd_dnssec)

    q = action("ds")
    q.add_argument("zone", help="the zone, e.g. example.com")
    config_arg(q, "the node's configuration (zones and keys directories)")
    q.add_argument("--zones", metavar="DIR", help="zones directory (overrides the config)")
    keys_arg(q)
    q.add_argument("--digest", choices=list(DIGEST_TYPES), default="sha256",
                   help="the DS digest: sha256 (digest type 2, the default) or sha384 (4)")
    q.add_argument("--dnskey", action="store_true",
                   help="also print the keys' DNSKEY records (for a parent that takes "
                        "those)")
    q.set_defaults(func=cmd_dnssec)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
