"""What build is running: version, git revision, Python version (the labels of ``fr_build_info``)."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

from exporter import __version__


@functools.cache
def git_revision() -> str:
    """$FR_BUILD_REVISION (set by the image build), else the source checkout's HEAD, else "unknown"."""
    rev = os.environ.get("FR_BUILD_REVISION", "").strip()
    if rev:
        return rev
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def build_labels() -> dict[str, str]:
    return {"version": __version__, "revision": git_revision(), "python_version": platform.python_version()}
