"""Installable BERT pretraining pipeline: Beam preprocessing, DeepSpeed training, MLflow tracking."""

from pathlib import Path

from setuptools import find_packages, setup

# Bounds are the ranges these packages were installed and tested together in.
# torch is installed first and pinned by the Makefile (torch==2.13.0, the CPU build on
# machines without a GPU); the range here only keeps pip from replacing it.
INSTALL_REQUIRES = [
    "torch>=2.4,<2.14",
    "deepspeed>=0.16,<0.20",
    "webdataset>=0.2.100,<1.1",
    # Datasets are read (manifest and shards) through fsspec: local paths, s3://, gs://.
    "fsspec>=2023.1",
    "tokenizers>=0.20,<0.24",
    "apache-beam>=2.60,<2.78",
    "mlflow>=3.0,<3.19",
    # Checkpoint format Hugging Face reads without pickle.
    "safetensors>=0.4,<0.9",
    # One msgpack member per training sample in the shards (see the shard contract).
    "msgpack>=1.0,<2",
    "numpy>=1.26,<3",
    # Sentence segmentation: compiled, ~300 languages, no model download at run time.
    "sentencex>=1.0,<2",
    # Parquet input.
    "pyarrow>=14,<26",
    "zstandard>=0.22,<0.26",  # .zst inputs
    "tqdm>=4.66,<5",
    # CPU and memory samples for MLflow's system metrics; the tests watch process trees with it.
    "psutil>=5.9,<8",
    # The demo's loss-curve PNG (mlflow already depends on it).
    "matplotlib>=3.7,<4",
]

TEST_REQUIRE = [
    "pytest>=8,<10",
    "pytest-xdist>=3.5,<4",  # make test runs the files in two processes
    "ruff>=0.6,<0.18",
    # Reference implementation for the parity tests and the benchmarks; never imported at run time.
    "transformers>=4.45,<6",
    # transformers' Trainer, the peer of benchmarks/learning.py.
    "accelerate>=1.1,<2",
    # A real S3-compatible server process for the object-store tests.
    "moto[server]>=5,<6",
    # Beam's Dask runner on a local dask.distributed cluster.
    "dask[distributed]>=2024.4.2",
    "s3fs>=2024.1",
]

# Object stores: fsspec's implementations for S3 (and S3-compatible stores) and Google Cloud Storage; for
# Google Cloud, Beam's Dataflow runner too.
CLOUDS = {"aws": ["s3fs>=2024.1"], "gcp": ["gcsfs>=2024.1", "apache-beam[gcp]>=2.60,<2.78"]}

setup(
    name="bertpipe",
    version="0.1.0",
    description="BERT pretraining pipeline: Beam preprocessing to WebDataset shards, DeepSpeed ZeRO "
    "training, MLflow tracking and registry, fine-tuning jobs",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["model", "model.*", "pipeline", "pipeline.*", "preprocessing", "preprocessing.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRE, **CLOUDS},
    entry_points={"console_scripts": ["bertpipe = pipeline.cli:main"]},
    license="Apache-2.0",
)
