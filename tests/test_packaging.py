"""Packaging: `python -m build` makes an sdist and a wheel that `twine check --strict` accepts,
with the LICENSE that pyproject.toml declares; the systemd units start commands the CLI accepts."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from exporter.cli import EXIT_CONFIG, build_parser

pytestmark = pytest.mark.slow(seconds=5)  # the file: builds the sdist and the wheel

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # build from a copy of exactly what the Dockerfile copies, so the tree's build/ stays untouched
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "exporter", src / "exporter", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def test_twine_accepts_the_sdist_and_the_wheel(dist: Path) -> None:
    files = sorted(dist.iterdir())
    assert sorted(f.suffix for f in files) == [".gz", ".whl"], files
    res = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("PASSED") == 2


def test_the_wheel_holds_the_package_and_the_license(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        license_text = z.read(next(n for n in names if n.endswith("/LICENSE"))).decode()
        entry = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "exporter/py.typed" in names and "exporter/web.py" in names and "exporter/sidecar/serve.py" in names
    assert not [n for n in names if n.startswith(("tests/", "mixin/"))]
    assert "fr-exporter = exporter.cli:main" in entry
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "Apache-2.0"
    assert re.search(r"^License-Expression: Apache-2\.0$", meta, re.M)
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert license_text == (ROOT / "LICENSE").read_text()
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as t:
        members = {m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name}
    assert {"LICENSE", "README.md", "pyproject.toml", "exporter/cli.py"} <= members


def test_the_license_is_the_full_apache_2_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    for heading in ("1. Definitions.", "2. Grant of Copyright License.", "3. Grant of Patent License.",
                    "4. Redistribution.", "7. Disclaimer of Warranty.", "8. Limitation of Liability.",
                    "9. Accepting Warranty or Additional Liability.", "END OF TERMS AND CONDITIONS"):  # fmt: skip
        assert heading in text, heading


@pytest.mark.parametrize(("unit", "command"), [("fr-exporter.service", "run"),
                                               ("fr-exporter-sidecar.service", "sidecar")])  # fmt: skip
def test_systemd_units_run_commands_the_cli_accepts(unit: str, command: str) -> None:
    text = (ROOT / "deploy" / "systemd" / unit).read_text().replace("\\\n", " ")
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(text)
    argv = shlex.split(cp["Service"]["ExecStart"])
    assert argv[0].endswith("/fr-exporter") and argv[1] == command
    args = build_parser().parse_args(argv[1:])  # a wrong flag would exit here
    assert args.config == "/etc/fr-exporter/live.yaml"
    assert cp["Service"]["User"] != "root" and cp["Service"]["NoNewPrivileges"] == "yes"
    assert cp["Service"]["RestartPreventExitStatus"] == str(EXIT_CONFIG)  # a config error is not retried
    assert cp["Install"]["WantedBy"] == "multi-user.target"
    if shutil.which("systemd-analyze"):
        res = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(ROOT / "deploy" / "systemd" / unit)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        # the binary and the user exist only once installed; anything else is a unit-file error
        problems = [
            ln
            for ln in (res.stdout + res.stderr).splitlines()
            if ln.strip() and "not executable" not in ln and "No such file" not in ln and "fr-exporter" not in ln
        ]
        assert not problems, problems
