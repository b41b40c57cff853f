"""`bertpipe tokenizer train` and `launch/preprocess.sh` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "pydocs" / "corpus.txt"
BERTPIPE = str(Path(sys.executable).parent / "bertpipe")
IN_PROCESS = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]


def run(*command: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, **env})


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "part.txt"
    path.write_text("\n\n".join(CORPUS.read_text(encoding="utf-8").split("\n\n")[:80]), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, small_corpus) -> Path:
    out = tmp_path_factory.mktemp("tok")
    result = run(
        BERTPIPE, "tokenizer", "train", "--input", str(small_corpus), "--vocab-size", "1500", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "WordPiece vocabulary of 1500 entries (uncased)" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    again = run(BERTPIPE, "tokenizer", "train", "--input", str(small_corpus), "--out", str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr
    return out


@pytest.mark.slow
def test_phase_two_preprocessing(tmp_path, small_corpus, tokenizer_dir):
    result = run(
        "launch/preprocess.sh", "--phase", "2", "--input", str(small_corpus), "--tokenizer", str(tokenizer_dir),
        "--output", str(tmp_path), "--dupe-factor", "1", *IN_PROCESS,
        BERTPIPE=BERTPIPE,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "seq512" / "manifest.json").read_text())
    assert manifest["parameters"]["max_seq_length"] == 512
    assert manifest["parameters"]["max_predictions_per_seq"] == 80
    assert "random-next share" in result.stdout and "train" in result.stdout


def test_launch_script_rejects_an_unknown_phase(tmp_path):
    result = run("launch/preprocess.sh", "--phase", "3", "--output", str(tmp_path), BERTPIPE=BERTPIPE)
    assert result.returncode == 2 and "--phase must be 1 (seq 128) or 2 (seq 512)" in result.stderr


def test_missing_input_is_a_clear_error(tmp_path, tokenizer_dir):
    result = run(
        BERTPIPE, "preprocess", "--input", str(tmp_path / "nothing-*.txt"), "--tokenizer", str(tokenizer_dir),
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "matches no file" in result.stderr and "Traceback" not in result.stderr


def test_tokenizer_training_refuses_parquet(tmp_path):
    (tmp_path / "docs.parquet").write_bytes(b"PAR1")
    result = run(
        BERTPIPE, "tokenizer", "train", "--input", str(tmp_path / "docs.parquet"), "--out", str(tmp_path / "t")
    )
    assert result.returncode == 2
    assert "train the tokenizer on text or JSON Lines" in result.stderr and "Traceback" not in result.stderr
