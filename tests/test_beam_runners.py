"""The Beam job on runners other than the local one, each started for real on 127.0.0.1: Dask on a local
`dask.distributed` cluster, and the portable runner with its workers in a separately started worker pool
(another process, another working directory, as a cluster's workers are). Each writes the same bytes as the
local runner."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.training.distributed import free_port
from preprocessing import preprocess
from preprocessing.beam_job import JobParams
from tests.conftest import PYDOCS_CORPUS

# The recipe of the `pretraining_dataset` fixture, the local runner's output these runs are compared with.
PARAMS = JobParams(seed=11, dupe_factor=2, validation_fraction=0.1, bucket_mb=0.1, shard_mb=0.3)


def assert_same_dataset(directory: Path, reference: Path) -> None:
    names = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in directory.iterdir()) == names
    for name in names:
        assert (directory / name).read_bytes() == (reference / name).read_bytes(), name


def run_job(output: Path, reference: Path, beam_args: list[str]) -> preprocess.Outcome:
    outcome = preprocess.run([str(PYDOCS_CORPUS)], str(reference.parent / "tokenizer"), str(output), PARAMS, beam_args)
    assert not outcome.skipped
    return outcome


@pytest.mark.slow
def test_dask_runner_on_a_local_cluster_writes_the_local_runners_bytes(tmp_path, pretraining_dataset):
    distributed = pytest.importorskip("distributed", reason="Dask runs need `pip install 'apache-beam[dask]'`")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        runner = [
            "--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
            f"--dask_client_address={cluster.scheduler_address}",
        ]
        outcome = run_job(tmp_path / "ds", pretraining_dataset, runner)
    assert_same_dataset(tmp_path / "ds", pretraining_dataset)
    local = preprocess.Manifest.from_dict  # noqa: F841
    assert outcome.manifest.counters["documents"] == 372


def close_dask_clients() -> None:
    """The runner leaves its client connected; closed before the cluster, it does not retry at exit."""
    from distributed import Client

    for client in list(Client._instances):
        client.close()


def wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"the Beam worker pool did not listen on port {port} within {timeout_s} s")


@pytest.mark.slow
def test_portable_runner_in_loopback_mode_writes_the_local_runners_bytes(tmp_path, pretraining_dataset):
    runner = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]
    run_job(tmp_path / "ds", pretraining_dataset, runner)
    assert_same_dataset(tmp_path / "ds", pretraining_dataset)


@pytest.mark.slow
def test_portable_runner_with_an_external_worker_pool_writes_the_local_runners_bytes(tmp_path, pretraining_dataset):
    port = free_port()
    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
        cwd=elsewhere,
        # The pool starts each worker as `python -m ...`: this interpreter first on PATH, as in a worker image.
        env={
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, 60)
        runner = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL"]
        runner += [f"--environment_config=127.0.0.1:{port}"]
        os.chdir(tmp_path)  # a relative output path: made absolute for the workers in their own folder
        try:
            run_job(Path("ds"), pretraining_dataset, runner)
        finally:
            os.chdir(Path(__file__).resolve().parents[1])
    finally:
        os.killpg(pool.pid, signal.SIGTERM)
        pool.wait(timeout=30)
    assert_same_dataset(tmp_path / "ds", pretraining_dataset)
