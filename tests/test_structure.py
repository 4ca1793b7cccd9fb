"""The shape of the code (issue 9): no import cycle anywhere in geodns/, and
a data plane that imports neither PyYAML nor anything of the control plane.

Imports are read from the source with :mod:`ast`, including those under
``if TYPE_CHECKING:`` and inside functions: a cycle that only the type
checker sees still ties the modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "geodns"
# The query path: bytes in, bytes out, from compiled tables.
DATA_PLANE = ("geodns.wire", "geodns.parse", "geodns.ecs", "geodns.cookies", "geodns.decisions",
              "geodns.compile",
              "geodns.resolve", "geodns.steering")
# Pure decisions of the control plane: no I/O either, so the same rule holds.
PURE = (*DATA_PLANE, "geodns.anycast", "geodns.health.votes", "geodns.health.state")
# What the data plane must never reach, directly or through another module.
CONTROL_PLANE = ("geodns.server", "geodns.admin", "geodns.metrics", "geodns.status",
                 "geodns.snapshot", "geodns.config", "geodns.yamlsrc", "geodns.cli",
                 "geodns.node", "geodns.zones.loader", "geodns.zones.values",
                 "geodns.zones.checks", "geodns.zones.steer", "geodns.zones.bindimport",
                 "geodns.zones.rdtext",
                 "geodns.health.checker", "geodns.health.probes", "geodns.health.store",
                 "geodns.health.parse", "geodns.state", "geodns.explain")
FOREIGN_CONTROL = ("yaml", "aiohttp", "asyncio", "prometheus_client", "dns", "dnslib")


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(geodns modules, other top-level packages) that a module imports."""
    ours: set[str] = set()
    theirs: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("geodns"):
                    ours.add(alias.name)
                else:
                    theirs.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if not base.startswith("geodns"):
                theirs.add(base.split(".")[0])
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                ours.add(full if full in known else base)
    return {m for m in ours if m in known and m != name}, theirs


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    known = modules()
    ours, theirs = {}, {}
    for name, path in known.items():
        ours[name], theirs[name] = imports(name, path, known)
    return ours, theirs


def test_no_import_cycle() -> None:
    edges, _ = graph()
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_data_plane_reaches_no_control_plane_module() -> None:
    edges, foreign = graph()
    for root in PURE:
        seen = {root}
        todo = [root]
        while todo:
            for dep in edges[todo.pop()]:
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        bad = sorted(m for m in seen if m.startswith(CONTROL_PLANE))
        assert not bad, f"{root} reaches {bad}"
        others = sorted({p for m in seen for p in foreign[m] if p in FOREIGN_CONTROL})
        assert not others, f"{root} reaches {others}"


def test_the_checker_sees_a_cycle() -> None:
    """The cycle test can fail: a made-up cycle is found."""
    edges, _ = graph()
    assert "geodns.wire" in edges and "geodns.compile" in edges["geodns.wire"]
    edges["geodns.compile"] = edges["geodns.compile"] | {"geodns.wire"}
    found = []

    def visit(node: str, path: list[str], state: dict[str, int]) -> None:
        state[node] = 1
        for dep in edges[node]:
            if state.get(dep) == 1:
                found.append(dep)
            elif dep not in state:
                visit(dep, [*path, dep], state)
        state[node] = 2

    visit("geodns.wire", ["geodns.wire"], {})
    assert found


def test_no_merge_conflict_markers_are_committed() -> None:
    """A merge resolved by hand once left ``<<<<<<< HEAD`` in
    docs/configuration.md; nothing tracked may hold such a block."""
    import subprocess
    root = PACKAGE.parent
    files = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True,
                           check=True).stdout.split(b"\0")
    found = []
    for rel in filter(None, files):
        path = root / rel.decode()
        if not path.is_file():
            continue
        lines = path.read_bytes().splitlines()
        starts = [i for i, ln in enumerate(lines) if ln.startswith(b"<<<<<<< ")]
        if starts and any(ln.startswith(b">>>>>>> ") for ln in lines):
            found.append(f"{rel.decode()}:{starts[0] + 1}")
    assert not found, found
