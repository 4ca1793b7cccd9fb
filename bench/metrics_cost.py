"""What counting costs: geodns with its query counters against a copy of
itself with the counting lines taken out, in alternating runs.

Every metric but one is read at scrape time from state the server keeps
anyway; the one cost on the query path is the counter increment per answer
(which also feeds the steering counters).  This script copies the geodns
package to a temporary directory, deletes those lines from the copy's
``wire.py`` (failing loudly if they are not where it expects), and runs
``bench/run.py`` for geodns and for the copy in turn, ``--rounds`` times,
so that both see the same machine noise.  It prints the medians per
workload and the ratio (counters on / off).

    .venv/bin/python bench/metrics_cost.py                   # 3 rounds x 4 workloads x 8 s
    .venv/bin/python bench/metrics_cost.py --rounds 5 --workloads static,steered
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The counting lines in geodns/wire.py: the key, the increment, and the
# query-type slice that only the key uses.
COUNTING = [
    re.compile(r"^\s+qt = \((data\[qend\]|question\[-4\]) << 8\) \| .+\n", re.M),
    re.compile(r"^\s+k = cid \| \(\(qt if qt in COUNTED_QTYPES else OTHER\) << 1\) \| udp\n",
               re.M),
    re.compile(r"^\s+self\.counts\[k\] \+= 1\n", re.M),
    re.compile(r"^\s+self\.counts\[counters\.key\(.*\)\] \+= 1\n", re.M),
]
EXPECTED = (3, 1, 1, 2)  # how many of each the current wire.py has


def uncounted_copy(dest: Path) -> Path:
    """geodns without its per-query counting, under ``dest``."""
    pkg = dest / "geodns"
    shutil.copytree(ROOT / "geodns", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    wire = pkg / "wire.py"
    text = wire.read_text()
    for pattern, expected in zip(COUNTING, EXPECTED, strict=True):
        text, n = pattern.subn("", text)
        if n != expected:
            raise SystemExit(f"wire.py changed: {pattern.pattern!r} matched {n} times, expected "
                             f"{expected}; update bench/metrics_cost.py")
    wire.write_text(text)
    return dest


def run_bench(args: argparse.Namespace, out: Path, geodns_cmd: str | None) -> dict[str, float]:
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--servers", "geodns", "--runs", "1",
           "--duration", str(args.duration), "--workloads", args.workloads, "--json", str(out)]
    if geodns_cmd:
        cmd += ["--geodns-cmd", geodns_cmd]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    doc = json.loads(out.read_text())
    return {wl: servers["geodns"]["median_qps"] for wl, servers in doc["summary"].items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--workloads", default="static,nxdomain,mix,steered")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="geodns-uncounted-") as tmp:
        copy = uncounted_copy(Path(tmp))
        off_cmd = (f"env PYTHONPATH={copy} {sys.executable} -P -m geodns serve --config {{config}}"
                   f" --listen {{host}}:{{port}} --zones {{zones}}")
        where = subprocess.run(["env", f"PYTHONPATH={copy}", sys.executable, "-P", "-c",
                                "import geodns.wire as w; print(w.__file__)"],
                               capture_output=True, text=True, check=True, cwd=ROOT).stdout
        if not where.startswith(str(copy)):
            raise SystemExit(f"the uncounted copy is not the one imported: {where}")
        on: dict[str, list[float]] = {}
        off: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for label, cmd, acc in (("on", None, on), ("off", off_cmd, off)):
                got = run_bench(args, Path(tmp) / f"{label}-{r}.json", cmd)
                for wl, qps in got.items():
                    acc.setdefault(wl, []).append(qps)
                print(f"round {r + 1}/{args.rounds} counters {label:>3}: "
                      + "  ".join(f"{wl} {q:,.0f}" for wl, q in got.items()), flush=True)
    print(f"\n{'workload':<10}{'counters on':>14}{'counters off':>14}{'on / off':>10}   runs on | off")
    for wl in on:
        a, b = statistics.median(on[wl]), statistics.median(off[wl])
        runs = " ".join(f"{q:,.0f}" for q in on[wl]) + " | " + \
            " ".join(f"{q:,.0f}" for q in off[wl])
        print(f"{wl:<10}{a:>14,.0f}{b:>14,.0f}{a / b:>10.3f}   {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
