"""CPU seconds of the test suite now against an earlier commit, for the same test files (issue 16).

    python bench/suite_cpu.py [--base 0fb9db2] [--rounds 3] [--keep]

The test files that exist at ``--base`` (less the ones that start external daemons: Prometheus,
Alertmanager) are run in one pytest process each, at the base commit (a temporary git worktree) and
in this checkout, alternately (base, now, base, now, ...) so that the machine's load falls on both
alike. Each run's user and system CPU is that of the pytest process and every child it waited for
(simulators, exporters, promtool), from ``wait4``. Prints each run, the medians and the ratio
now / base. Both run with this checkout's virtualenv (the same library versions); the base's own
``exporter`` is imported from its worktree (PYTHONPATH).

Not part of ``make bench`` (minutes of CPU): run by hand, on a machine as quiet as can be had.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# files that start external daemons: their CPU is Prometheus' and Alertmanager's, and mostly waiting
DAEMON_FILES = {"tests/test_e2e_stack.py", "tests/test_alertmanager.py", "tests/test_e2e_scaleout.py"}


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_files(base: str) -> list[str]:
    listed = _git("ls-tree", "--name-only", base, "tests/").split()
    return [p for p in listed if p.endswith(".py") and Path(p).name.startswith("test_") and p not in DAEMON_FILES]


def run_once(tree: Path, files: list[str]) -> tuple[float, float, int, str]:
    """(user + system CPU seconds, wall seconds, exit status, last line) of one pytest run in ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files]
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(args, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        out.seek(0)
        lines = out.read().decode(errors="replace").strip().splitlines()
    return usage.ru_utime + usage.ru_stime, wall, os.waitstatus_to_exitcode(status), lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="0fb9db2", help="the earlier commit (default: the end of session 1)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each side, alternating (default 3)")
    p.add_argument("--keep", action="store_true", help="keep the base worktree")
    args = p.parse_args(argv)
    files = test_files(args.base)
    wt = Path(tempfile.mkdtemp(prefix="suite-cpu-")) / "base"
    _git("worktree", "add", "--detach", str(wt), args.base)
    # the tests find the shared sample data at ../shared, as in CI
    shared = ROOT.parent / "shared"
    if shared.exists() and not (wt.parent / "shared").exists():
        (wt.parent / "shared").symlink_to(shared.resolve())
    print(f"{len(files)} test files of {args.base}, {args.rounds} rounds, one process each, base then now")
    cpu: dict[str, list[float]] = {"base": [], "now": []}
    try:
        for r in range(args.rounds):
            for side, tree in (("base", wt), ("now", ROOT)):
                c, w, code, last = run_once(tree, files)
                cpu[side].append(c)
                print(f"  round {r + 1} {side:4s}: {c:6.1f} s CPU  {w:6.1f} s wall  exit {code}  {last}", flush=True)
    finally:
        if not args.keep:
            _git("worktree", "remove", "--force", str(wt))
            shutil.rmtree(wt.parent, ignore_errors=True)
    base, now = statistics.median(cpu["base"]), statistics.median(cpu["now"])
    print(f"median CPU: base {base:.1f} s, now {now:.1f} s, now/base {now / base:.2f}")
    with open("/proc/loadavg") as f:
        print(f"load average at the end: {' '.join(f.read().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
