"""The system programs some tests start (sshd and pdsh, Slurm's daemons): found on PATH or in /usr/sbin (root's
daemons), or the test fails saying what to install."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest


def find(name: str) -> str | None:
    daemon = Path("/usr/sbin", name)
    return shutil.which(name) or (str(daemon) if daemon.exists() else None)


def require(names: Iterable[str], tests: str, packages: str) -> dict[str, str]:
    """Each program's path; fails the calling test with the Debian packages to install when one is missing."""
    found = {name: find(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.fail(f"{tests} need {', '.join(missing)} (Debian: apt-get install {packages}); .ci/run installs them")
    return {name: path for name, path in found.items() if path is not None}
