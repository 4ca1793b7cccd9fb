"""BIND master files (RFC 1035 section 5) -> geodns YAML, for migrations.

Theory of operation: the file is read one record at a time
(:class:`_Reader`): dnspython's tokenizer splits the text (quotes, escapes,
parentheses, comments) and its rdata parsers read each record's data, but
the loop over records, the directives ($ORIGIN, $TTL, $INCLUDE, $GENERATE)
and the owner/TTL/class rules are ours, so that every record keeps the line
it starts on and a record that cannot be read is reported and passed over
instead of ending the import.  Then each record set is written in our
format, and the YAML is loaded back with the zone loader: a problem it finds
is traced back to the record set, and so to the line of the master file,
that it came from.

What cannot be carried over (a record that does not parse, a class other
than IN, a type that is no zone data here such as RRSIG or DNAME, a value the
loader rejects) is listed all at once, each with its file and line; with
``skip_unsupported`` those records are left out and the list becomes a
warning.  The output loads back into the same records (the tests check that
by serving both with Knot/NSD and geodns and comparing answers).
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tokenizer
import dns.ttl
import yaml

from geodns import rdata as rd
from geodns.errors import GeodnsError
from geodns.yamlsrc import Problems, YMap, load_text
from geodns.zones import rdtext


class ImportError_(GeodnsError):
    pass


@dataclass(frozen=True)
class Place:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Record:
    """One record of the master file, where it starts."""

    place: Place
    name: dns.name.Name
    ttl: int
    rdtype: int
    rdata: Any  # a dnspython rdata


@dataclass
class _State:
    """What a $INCLUDE starts afresh and gives back at its end."""

    tok: dns.tokenizer.Tokenizer
    file: str
    origin: dns.name.Name | None
    last_name: dns.name.Name | None


class _RecordTokens(dns.tokenizer.Tokenizer):
    """One record's tokens, read already, handed to dnspython's rdata parsers
    as a tokenizer: whatever the parser makes of them, the next record
    starts where it should."""

    def __init__(self, tokens: list[dns.tokenizer.Token], file: str) -> None:
        super().__init__("", file)
        self._tokens = tokens
        self._at = 0

    def get(self, want_leading: bool = False,
            want_comment: bool = False) -> dns.tokenizer.Token:
        if self.ungotten_token is not None:
            token = self.ungotten_token
            self.ungotten_token = None
            return token
        if self._at >= len(self._tokens):
            return dns.tokenizer.Token(dns.tokenizer.EOF)
        token = self._tokens[self._at]
        self._at += 1
        return token


_GENERATE_SUB = re.compile(r"\\\$|\$\{([^}]*)\}|\$")


@dataclass
class _Reader:
    origin: dns.name.Name | None  # the zone's; None until $ORIGIN or the SOA gives it
    records: list[Record] = field(default_factory=list)
    problems: list[tuple[Place, str]] = field(default_factory=list)  # records passed over
    fatal: list[tuple[Place, str]] = field(default_factory=list)  # what ended the reading
    default_ttl: int | None = None  # $TTL
    last_ttl: int | None = None  # the last TTL written (RFC 1035 5.1)
    soa_minimum: int | None = None  # the default before RFC 2308, when nothing else says

    def read(self, path: Path) -> None:
        state = self._open(path, self.origin, Place(str(path), 0))
        if state is None:
            return
        stack: list[_State] = []
        while True:
            line = state.tok.line_number
            try:
                token = state.tok.get(want_leading=True)
            except dns.exception.SyntaxError as exc:
                self.fatal.append((Place(state.file, line), str(exc)))
                return  # the tokenizer cannot go on (an unclosed quote or parenthesis)
            if token.is_eof():
                if not stack:
                    return
                state = stack.pop()
                continue
            if token.is_eol():
                continue
            place = Place(state.file, line)
            try:
                tokens = self._rest_of_record(state.tok)
            except dns.exception.SyntaxError as exc:
                self.fatal.append((place, str(exc)))
                return
            if token.is_identifier() and token.value.startswith("$"):
                included = self._directive(token.value.upper(), tokens, state, place)
                if included is not None:
                    stack.append(state)
                    state = included
                continue
            self._record(token, tokens, state, place)

    def _open(self, path: Path, origin: dns.name.Name | None, place: Place) -> _State | None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            self.fatal.append((place, f"cannot read {path}: {exc.strerror or exc}"))
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            self.fatal.append((Place(str(path), line), "bytes that are not UTF-8: write "
                               "them as \\DDD escapes (\\255 for the byte 0xff)"))
            return None
        tok = dns.tokenizer.Tokenizer(text, str(path))
        return _State(tok, str(path), origin, origin)

    @staticmethod
    def _rest_of_record(tok: dns.tokenizer.Tokenizer) -> list[dns.tokenizer.Token]:
        tokens: list[dns.tokenizer.Token] = []
        while True:
            token = tok.get()
            if token.is_eol_or_eof():
                if token.is_eof():
                    tok.unget(token)
                return tokens
            tokens.append(token)

    def _directive(self, name: str, tokens: list[dns.tokenizer.Token], state: _State,
                   place: Place) -> _State | None:
        args = [t.value for t in tokens]
        try:
            if name == "$ORIGIN" and len(args) == 1:
                state.origin = dns.name.from_text(args[0], state.origin)
                if self.origin is None:
                    self.origin = state.origin
            elif name == "$TTL" and len(args) == 1:
                self.default_ttl = dns.ttl.from_text(args[0])
            elif name == "$INCLUDE" and len(args) in (1, 2):
                target = Path(args[0])
                if not target.is_absolute():
                    target = Path(state.file).parent / target
                origin = dns.name.from_text(args[1], state.origin) if len(args) == 2 \
                    else state.origin
                return self._open(target, origin, place)
            elif name == "$GENERATE" and len(args) >= 3:
                self._generate(args, state, place)
            else:
                self.fatal.append((place, f"cannot read the directive {name} "
                                      f"{' '.join(args)}"))
        except (dns.exception.DNSException, ValueError) as exc:
            self.fatal.append((place, f"{name}: {exc}"))
        return None

    def _generate(self, args: list[str], state: _State, place: Place) -> None:
        """``$GENERATE start-stop[/step] lhs [ttl] [class] type rhs`` (BIND)."""
        m = re.fullmatch(r"(\d+)-(\d+)(?:/(\d+))?", args[0])
        if m is None or int(m.group(3) or 1) < 1 or int(m.group(1)) > int(m.group(2)):
            raise ValueError(f"bad range {args[0]!r} (START-STOP or START-STOP/STEP)")
        start, stop, step = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
        if (stop - start) // step > 65535:
            raise ValueError(f"range {args[0]} makes more than 65536 records")
        for counter in range(start, stop + 1, step):
            text = " ".join(_substitute(a, counter) for a in args[1:])
            tok = dns.tokenizer.Tokenizer(text, state.file)
            first = tok.get(want_leading=True)
            self._record(first, self._rest_of_record(tok), state, place)

    def _record(self, first: dns.tokenizer.Token, tokens: list[dns.tokenizer.Token],
                state: _State, place: Place) -> None:
        if first.is_whitespace() and not tokens:
            return  # a line of blanks
        try:
            if first.is_whitespace():
                if state.last_name is None:
                    raise ValueError("the record has no owner name and none came before it")
                name = state.last_name
            else:
                if state.origin is None and not first.value.endswith("."):
                    raise ValueError(f"the owner {first.value!r} is relative and the zone's "
                                     "origin is not known: give --origin or write $ORIGIN")
                name = dns.name.from_text(first.value, state.origin)
                state.last_name = name
            tok = _RecordTokens(tokens, state.file)
            ttl, rdclass = self._ttl_and_class(tok)
            written = tok.get_string()
            try:
                rdtype = dns.rdatatype.from_text(written)
            except dns.exception.DNSException:
                raise ValueError(f"unknown record type {written!r}") from None
            value: Any = dns.rdata.from_text(rdclass, rdtype, tok, state.origin or name, False,
                                        self.origin)
            if rdclass != dns.rdataclass.IN:
                raise ValueError(f"class {dns.rdataclass.to_text(rdclass)} records are not "
                                 "served (only IN)")
            if rdtype == dns.rdatatype.SOA:
                if self.origin is None:
                    self.origin = state.origin = name
                self.soa_minimum = value.minimum
            if ttl is None:
                ttl = self.default_ttl if self.default_ttl is not None else \
                    self.last_ttl if self.last_ttl is not None else self.soa_minimum
            if ttl is None:
                raise ValueError("the record has no TTL and no $TTL came before it")
        except dns.exception.SyntaxError as exc:
            self.problems.append((place, _reason(exc, tokens)))
            return
        except (dns.exception.DNSException, ValueError) as exc:
            self.problems.append((place, str(exc) or type(exc).__name__))
            return
        except Exception as exc:  # dnspython's parsers raise more than DNSException
            self.problems.append((place, f"{type(exc).__name__}: {exc}"))
            return
        self.records.append(Record(place, name, ttl, rdtype, value))

    def _ttl_and_class(self, tok: dns.tokenizer.Tokenizer,
                       ) -> tuple[int | None, dns.rdataclass.RdataClass]:
        """``[TTL] [CLASS]`` or ``[CLASS] [TTL]`` before the type."""
        ttl: int | None = None
        rdclass: dns.rdataclass.RdataClass | None = None
        for _ in range(2):
            token = tok.get()
            if not token.is_identifier():
                tok.unget(token)
                break
            if ttl is None:
                try:
                    ttl = self.last_ttl = dns.ttl.from_text(token.value)
                    continue
                except dns.exception.SyntaxError:
                    pass
            if rdclass is None:
                try:
                    rdclass = dns.rdataclass.from_text(token.value)
                    continue
                except dns.exception.DNSException:
                    pass
            tok.unget(token)
            break
        return ttl, dns.rdataclass.IN if rdclass is None else rdclass


def _reason(exc: dns.exception.SyntaxError, tokens: list[dns.tokenizer.Token]) -> str:
    msg = str(exc)
    if msg in ("", "Text input is malformed."):
        return "malformed record: " + " ".join(t.value for t in tokens)
    return msg


def _substitute(template: str, counter: int) -> str:
    """A $GENERATE template with ``$`` (or ``${offset,width,base}``) replaced."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "\\$":
            return "$"
        if m.group(1) is None:
            return str(counter)
        fields = m.group(1).split(",")
        offset = int(fields[0] or 0)
        width = int(fields[1]) if len(fields) > 1 and fields[1] else 0
        base = fields[2] if len(fields) > 2 and fields[2] else "d"
        value = counter + offset
        if base in ("n", "N"):
            digits = format(value, "x" if base == "n" else "X").zfill(max(1, (width + 1) // 2))
            return ".".join(reversed(digits))
        if base not in ("d", "o", "x", "X"):
            raise ValueError(f"$GENERATE base {base!r} (d, o, x, X, n or N)")
        return format(value, base).zfill(width)

    return _GENERATE_SUB.sub(one, template)


# -- writing YAML ------------------------------------------------------------------


def _rel(name: dns.name.Name, origin: dns.name.Name) -> str:
    if name == origin:
        return "@"
    if name.is_subdomain(origin):
        return name.relativize(origin).to_text()
    return name.to_text()


def _txt_value(strings: tuple[bytes, ...]) -> Any:
    """Text strings as YAML strings; any that is not UTF-8 as ``!!binary``."""
    out: list[str | bytes] = []
    for s in strings:
        try:
            out.append(s.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(s)
    return out[0] if len(out) == 1 else out


def _value(rdtype: int, r: Any, origin: dns.name.Name) -> Any:
    """One record's value in the YAML form docs/zones.md gives for its type."""
    t = dns.rdatatype
    if rdtype in (t.A, t.AAAA):
        return r.address
    if rdtype in (t.NS, t.CNAME, t.PTR):
        return _rel(r.target, origin)
    if rdtype == t.MX:
        return f"{r.preference} {_rel(r.exchange, origin)}"
    if rdtype == t.SRV:
        return f"{r.priority} {r.weight} {r.port} {_rel(r.target, origin)}"
    if rdtype == t.CAA:
        value: str | bytes = r.value
        with contextlib.suppress(UnicodeDecodeError):  # else bytes: written as !!binary
            value = r.value.decode("utf-8")
        return {"flags": r.flags, "tag": r.tag.decode("ascii"), "value": value}
    if rdtype in (t.TXT, t.SPF):
        return _txt_value(tuple(r.strings))
    if rdtype in rdtext.BY_PRESENTATION:
        return r.to_text()
    wire = rdtext.from_dnspython(r, generic=True).wire
    return f"\\# {len(wire)} {wire.hex()}" if wire else "\\# 0"  # RFC 3597 section 5


def _type_key(rdtype: int) -> str:
    return rd.NAME_BY_TYPE[rdtype] if rdtype in rd.SERVED_TYPES else f"TYPE{rdtype}"


@dataclass
class _RRset:
    name: dns.name.Name
    rdtype: int
    records: list[Record]


def convert(path: Path, origin: str | None = None,
            skip_unsupported: bool = False) -> tuple[str, list[str]]:
    """Returns (YAML text, warnings).  ``origin`` may be left out when the
    file says it ($ORIGIN, or an absolute SOA owner).  Raises ImportError_
    listing, each at its file and line, every record that cannot be carried
    over faithfully (with ``skip_unsupported`` those are left out and listed
    in a warning instead)."""
    try:
        zorigin = dns.name.from_text(origin) if origin else None
    except dns.exception.DNSException as exc:
        raise ImportError_(f"--origin {origin}: {exc}") from None
    reader = _Reader(zorigin)
    reader.read(path)
    if reader.fatal:
        # The file cannot be read on (an unclosed quote, bytes that are not text).
        raise ImportError_(_listing(f"{path}: cannot read on", reader.fatal + reader.problems))
    if reader.origin is None:
        raise ImportError_(f"{path}: the zone's origin is not known: give --origin or write "
                           "$ORIGIN in the file")
    zorigin = reader.origin
    warnings: list[str] = []
    # Records that do not parse are passed over like those of types geodns
    # does not serve: one list of everything, so that one run shows it all.
    skipped: list[tuple[Place, str]] = list(reader.problems)
    rrsets = _rrsets(reader.records, zorigin, skipped, warnings)
    for _ in range(len(rrsets) + 1):
        text, located = _yaml(path, zorigin, rrsets)
        problems = Problems()
        from geodns.zones.loader import load_zone_text

        if load_zone_text(text, "<import>", zorigin.to_text(), problems) is not None:
            break
        bad: dict[int, list[str]] = {}
        fatal: list[str] = []
        for problem in problems:
            where = problem.where
            indices = located(where.line) if where is not None else ()
            if not indices:
                fatal.append(problem.message)
            for index in indices:
                bad.setdefault(index, []).append(problem.message)
        for index, messages in bad.items():
            for record in rrsets[index].records:
                skipped.extend((record.place, m) for m in messages)
        if fatal:
            raise ImportError_(_listing(f"{path}: the zone does not validate",
                                        [(Place(str(path), 0), m) for m in fatal]))
        if not skip_unsupported:
            break
        rrsets = [r for i, r in enumerate(rrsets) if i not in bad]
    if skipped:
        msg = _listing("records geodns cannot take", skipped)
        if not skip_unsupported:
            raise ImportError_(msg + "\n(use --skip-unsupported to leave them out)")
        warnings.append("left out " + msg)
    return text, warnings


def _listing(head: str, items: list[tuple[Place, str]]) -> str:
    seen: set[tuple[Place, str]] = set()
    lines = []
    for place, msg in sorted(items, key=lambda i: (i[0].file, i[0].line)):
        if (place, msg) in seen:
            continue
        seen.add((place, msg))
        at = f"{place}: " if place.line else f"{place.file}: "
        lines.append(f"  {at}{msg}")
    return f"{head} ({len(lines)}):\n" + "\n".join(lines)


def _rrsets(records: list[Record], origin: dns.name.Name, skipped: list[tuple[Place, str]],
            warnings: list[str]) -> list[_RRset]:
    """The records as record sets, in the order of the file; records that
    are no zone data here, or outside the zone, go to ``skipped``."""
    sets: dict[tuple[dns.name.Name, int], _RRset] = {}
    for r in records:
        reason = rd.not_data(r.rdtype)
        if reason is not None:
            skipped.append((r.place, reason))
            continue
        if not r.name.is_subdomain(origin):
            skipped.append((r.place, f"{r.name} is outside the zone {origin} "
                            "(out-of-zone data)"))
            continue
        rrset = sets.setdefault((r.name, r.rdtype), _RRset(r.name, r.rdtype, []))
        if any(other.rdata == r.rdata for other in rrset.records):
            warnings.append(f"{r.place}: the same {_type_key(r.rdtype)} record as on line "
                            f"{next(o.place.line for o in rrset.records if o.rdata == r.rdata)}"
                            " again: served once")
            continue
        rrset.records.append(r)
    for rrset in sets.values():
        ttls = {r.ttl for r in rrset.records}
        if len(ttls) > 1:
            first = rrset.records[0].place
            warnings.append(f"{first}: the {_type_key(rrset.rdtype)} records of {rrset.name} "
                            f"have different TTLs ({', '.join(map(str, sorted(ttls)))}); "
                            f"all are served with the lowest (RFC 2181 5.2)")
    return list(sets.values())


def _yaml(path: Path, origin: dns.name.Name, rrsets: list[_RRset]) -> tuple[str, Any]:
    """The YAML document, and a function from one of its lines to the index
    of the record set written there (None for the lines of no record set)."""
    ttls: Counter[int] = Counter()
    for rrset in rrsets:
        ttls[min(r.ttl for r in rrset.records)] += len(rrset.records)
    default_ttl = ttls.most_common(1)[0][0] if ttls else 3600
    soa_out: dict[str, Any] = {}
    records: dict[str, dict[str, Any]] = {}
    order: list[list[int]] = []  # per owner written: the record sets, by type written
    owners: dict[dns.name.Name, list[int]] = {}
    for i, rrset in enumerate(rrsets):
        owners.setdefault(rrset.name, []).append(i)
    for name in sorted(owners, key=lambda n: (n != origin, n.to_text().lower())):
        types: dict[str, Any] = {}
        written: list[int] = []
        for i in sorted(owners[name], key=lambda i: rrsets[i].rdtype):
            rrset = rrsets[i]
            ttl = min(r.ttl for r in rrset.records)
            if rrset.rdtype == dns.rdatatype.SOA:
                soa = rrset.records[0].rdata
                soa_out = {
                    "mname": _rel(soa.mname, origin), "rname": _rel(soa.rname, origin),
                    "serial": soa.serial, "refresh": soa.refresh, "retry": soa.retry,
                    "expire": soa.expire, "minimum": soa.minimum,
                }
                if ttl != default_ttl:
                    soa_out["ttl"] = ttl
                continue
            values = [_value(rrset.rdtype, r.rdata, origin) for r in rrset.records]
            value: Any = values[0] if len(values) == 1 else values
            if rrset.rdtype in (dns.rdatatype.TXT, dns.rdatatype.SPF) and len(values) == 1 \
                    and isinstance(values[0], list):
                value = [values[0]]  # one multi-string record: keep it one record
            if ttl != default_ttl:
                value = {"ttl": ttl, "values": values}
            types[_type_key(rrset.rdtype)] = value
            written.append(i)
        if types:
            records[_rel(name, origin)] = types
            order.append(written)
    doc = {"origin": origin.to_text(), "ttl": default_ttl, "soa": soa_out, "records": records}
    header = f"# Imported from {path.name} by geodns import-zone.\n"
    text = header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000)
    # Where each record set went: the lines from its type key to the next key.
    starts: list[tuple[int, tuple[int, ...]]] = []  # (first line, record sets there)
    tree = load_text(text, "<import>", Problems())
    recs = tree.get("records") if isinstance(tree, YMap) else None
    if isinstance(recs, YMap):
        for (okey, onode), written in zip(recs.items, order, strict=True):
            starts.append((okey.where.line, tuple(written)))
            if isinstance(onode, YMap):
                for (tkey, _), index in zip(onode.items, written, strict=True):
                    starts.append((tkey.where.line, (index,)))
            # the owner's key itself means all of them (a problem with the name)
            starts.append((okey.where.line + 1, starts[-1][1]))

    def located(line: int) -> tuple[int, ...]:
        found: tuple[int, ...] = ()
        for first, indices in starts:
            if first > line:
                break
            found = indices
        return found

    return text, located
