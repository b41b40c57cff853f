"""launch/beam/Dockerfile, the Beam worker image, against the project it installs: a runner refuses workers
whose Beam differs from the submitting process's, and a torch other than the pinned one pulls gigabytes of
CUDA. (Building the image needs a Docker daemon and the network, which the suite does not have.)"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import apache_beam

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "launch" / "beam" / "Dockerfile"


def argument(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"no ARG {name}=... in {DOCKERFILE}"
    return match.group(1)


def test_the_worker_image_runs_the_beam_and_torch_this_project_runs():
    assert argument("BEAM_VERSION") == apache_beam.__version__
    pinned = re.search(r"^TORCH_PIN := torch==(\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert pinned and argument("TORCH_VERSION") == pinned.group(1)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"FROM apache/beam_python{python}_sdk:${{BEAM_VERSION}}" in DOCKERFILE.read_text()


def test_the_worker_image_copies_every_package_of_the_project():
    copied = re.findall(r"^COPY (.+) /opt/bertpipe/?\S*$", DOCKERFILE.read_text(), re.MULTILINE)
    sources = {name for line in copied for name in line.split()}
    packages = {"model", "preprocessing", "pipeline"}
    assert packages | {"setup.py", "pyproject.toml", "README.md"} <= sources
    assert all((ROOT / name).exists() for name in sources)
