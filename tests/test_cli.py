"""The installed `bertpipe` console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model import BertConfig


def bertpipe(*args: str) -> subprocess.CompletedProcess:
    script = shutil.which("bertpipe", path=str(Path(sys.executable).parent))
    assert script, "the bertpipe console script is not installed; run `make install`"
    return subprocess.run([script, *args], capture_output=True, text=True, timeout=120)


def test_model_info_for_a_preset():
    result = bertpipe("model", "info", "large")
    assert result.returncode == 0, result.stderr
    assert "layers=24 hidden=1024 heads=16 ffn=4096" in result.stdout
    assert "336,226,108" in result.stdout  # BertForPreTraining-Large, vocab 30522


def test_model_info_for_a_directory(tmp_path):
    BertConfig.from_preset("tiny", vocab_size=1000).save_pretrained(tmp_path)
    result = bertpipe("model", "info", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "vocab=1000" in result.stdout


@pytest.mark.parametrize("args", [("model", "info", "nonexistent"), ("frobnicate",)])
def test_bad_arguments_exit_2_with_a_message(args):
    result = bertpipe(*args)
    assert result.returncode == 2
    assert "error" in result.stderr
