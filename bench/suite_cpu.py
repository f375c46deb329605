"""CPU seconds of the test suite now against an earlier commit, for the same test files (issue 16).

    python bench/suite_cpu.py [--base 0fb9db2] [--rounds 3] [--keep] [--per-file] [--same-tests]

The test files that exist at ``--base`` (less the ones that start external daemons: Prometheus,
Alertmanager) are run in one pytest process each, at the base commit (a temporary git worktree) and
in this checkout, alternately (base, now, base, now, ...) so that the machine's load falls on both
alike. Each run's user and system CPU is that of the pytest process and every child it waited for
(simulators, exporters, promtool), from ``wait4``. Prints each run, the medians and the ratio
now / base. Both run with this checkout's virtualenv (the same library versions); the base's own
``exporter`` is imported from its worktree (PYTHONPATH).

``--same-tests`` runs the same *tests* rather than the same files: the test ids collected both at the
base and now (tests added to those files since, by any area, are left out; a renamed test drops out on
both sides), the same id list on both sides.

``--per-file`` also prints each file's CPU (median over the rounds, base and now, largest growth first):
the CPU of each test's setup, call and teardown (this process and its children), summed per file; what
is left of the whole run is collection, imports and the session's own set-up.

Not part of ``make bench`` (minutes of CPU): run by hand, on a machine as quiet as can be had.
"""

from __future__ import annotations

import argparse
import json
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


# Loaded into both runs with --per-file (-p): the CPU of each test (this process and the children it
# waited for), written as JSON {nodeid: seconds} to $SUITE_CPU_OUT at the end of the session.
PLUGIN = """
import json, os, resource
import pytest

_cpu = {}


def _now():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    t0 = _now()
    yield
    _cpu[item.nodeid] = _cpu.get(item.nodeid, 0.0) + _now() - t0


def pytest_sessionfinish(session):
    with open(os.environ["SUITE_CPU_OUT"], "w") as f:
        json.dump(_cpu, f)
"""


def collect(tree: Path, files: list[str]) -> set[str]:
    """The test ids pytest collects from ``files`` in ``tree`` (one process, no workers)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", *files]
    out = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True).stdout
    return {line.strip() for line in out.splitlines() if "::" in line and not line.startswith(" ")}


def run_once(
    tree: Path, files: list[str], per_test: Path | None = None
) -> tuple[float, float, int, str, dict[str, float]]:
    """(user + system CPU seconds, wall seconds, exit status, last line, CPU per file) of one pytest run
    in ``tree``, in one process (-n 0); the CPU per file only with ``per_test`` (the plugin's directory)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)
    env.pop("PYTEST_XDIST_AUTO_NUM_WORKERS", None)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files]
    out_json = None
    if per_test is not None:
        out_json = per_test / "cpu.json"
        env["PYTHONPATH"] += os.pathsep + str(per_test)
        env["SUITE_CPU_OUT"] = str(out_json)
        args[4:4] = ["-p", "suite_cpu_plugin"]
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(args, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        out.seek(0)
        lines = out.read().decode(errors="replace").strip().splitlines()
    per_file: dict[str, float] = {}
    if out_json is not None and out_json.exists():
        for nodeid, cpu in json.loads(out_json.read_text()).items():
            path = nodeid.split("::")[0]
            per_file[path] = per_file.get(path, 0.0) + cpu
        out_json.unlink()
    cpu_s = usage.ru_utime + usage.ru_stime
    return cpu_s, wall, os.waitstatus_to_exitcode(status), lines[-1] if lines else "", per_file


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="0fb9db2", help="the earlier commit (default: the end of session 1)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each side, alternating (default 3)")
    p.add_argument("--keep", action="store_true", help="keep the base worktree")
    p.add_argument("--per-file", action="store_true", help="also each file's CPU (a per-test plugin in both runs)")
    p.add_argument(
        "--same-tests",
        action="store_true",
        help="run only the tests (ids) that exist both at the base and now, not every test of the base's files",
    )
    args = p.parse_args(argv)
    files = test_files(args.base)
    wt = Path(tempfile.mkdtemp(prefix="suite-cpu-")) / "base"
    _git("worktree", "add", "--detach", str(wt), args.base)
    # the tests find the shared sample data at ../shared, as in CI
    shared = ROOT.parent / "shared"
    if shared.exists() and not (wt.parent / "shared").exists():
        (wt.parent / "shared").symlink_to(shared.resolve())
    what = f"{len(files)} test files of {args.base}"
    run_args = files
    if args.same_tests:
        # the tests themselves, not their files: tests added to these files since the base are left out,
        # and both sides run exactly the ids collected in both (an @file of ids: pytest reads it)
        base_ids, now_ids = collect(wt, files), collect(ROOT, files)
        same = sorted(base_ids & now_ids)
        ids_file = wt.parent / "same-tests.txt"
        ids_file.write_text("\n".join(same) + "\n")
        run_args = [f"@{ids_file}"]
        what = (
            f"{len(same)} tests collected both at {args.base} ({len(base_ids)}) and now ({len(now_ids)}), "
            f"in {len(files)} files"
        )
    print(f"{what}, {args.rounds} rounds, one process each, base then now")
    cpu: dict[str, list[float]] = {"base": [], "now": []}
    files_cpu: dict[str, dict[str, list[float]]] = {"base": {}, "now": {}}
    plugin_dir = None
    if args.per_file:
        plugin_dir = wt.parent / "plugin"
        plugin_dir.mkdir()
        (plugin_dir / "suite_cpu_plugin.py").write_text(PLUGIN)
    try:
        for r in range(args.rounds):
            for side, tree in (("base", wt), ("now", ROOT)):
                with open("/proc/loadavg") as f:
                    load = " ".join(f.read().split()[:3])
                c, w, code, last, per_file = run_once(tree, run_args, plugin_dir)
                cpu[side].append(c)
                for path, v in per_file.items():
                    files_cpu[side].setdefault(path, []).append(v)
                print(
                    f"  round {r + 1} {side:4s}: {c:6.1f} s CPU  {w:6.1f} s wall  exit {code}  load {load}  {last}",
                    flush=True,
                )
    finally:
        if not args.keep:
            _git("worktree", "remove", "--force", str(wt))
            shutil.rmtree(wt.parent, ignore_errors=True)
    if args.per_file:
        med = {side: {p: statistics.median(v) for p, v in d.items()} for side, d in files_cpu.items()}
        print("CPU per file (median; setup, call and teardown of its tests), largest growth first:")
        for path in sorted(
            set(med["base"]) | set(med["now"]), key=lambda p: med["base"].get(p, 0.0) - med["now"].get(p, 0.0)
        ):
            b, n = med["base"].get(path, 0.0), med["now"].get(path, 0.0)
            print(f"  {path:45s} base {b:6.2f}  now {n:6.2f}  {n - b:+6.2f}")
        tb, tn = sum(med["base"].values()), sum(med["now"].values())
        print(f"  {'all tests':45s} base {tb:6.2f}  now {tn:6.2f}  {tn - tb:+6.2f}")
    base, now = statistics.median(cpu["base"]), statistics.median(cpu["now"])
    print(f"median CPU: base {base:.1f} s, now {now:.1f} s, now/base {now / base:.2f}")
    with open("/proc/loadavg") as f:
        print(f"load average at the end: {' '.join(f.read().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
