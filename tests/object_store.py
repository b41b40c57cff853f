"""A real S3-compatible server (`moto_server`) on 127.0.0.1 for the tests, as its own process, reached through
the standard AWS environment variables as a user's object store would be."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.training.distributed import free_port
from tests.mlflow_servers import answers, wait_for

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server:
    def __init__(self, port: int):
        executable = shutil.which("moto_server") or str(Path(os.sys.executable).parent / "moto_server")
        if not Path(executable).is_file():
            pytest.fail("moto_server is missing: install the test extras (pip install -e '.[test]')")
        self.endpoint = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [executable, "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(lambda: answers(f"{self.endpoint}/moto-api/"), 60, f"moto_server on {self.endpoint}")

    @property
    def environment(self) -> dict[str, str]:
        """What a process needs to reach this server as its S3."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server(free_port())
    yield server
    server.stop()


@pytest.fixture
def s3_environment(s3_server, monkeypatch) -> S3Server:
    """This process talks to the test server as its S3 (fsspec's cached clients are dropped first)."""
    import fsspec

    for name, value in s3_server.environment.items():
        monkeypatch.setenv(name, value)
    fsspec.filesystem("s3").clear_instance_cache()
    return s3_server


def upload_directory(local: Path, url: str) -> None:
    """Every file under `local` to the prefix `url` (s3://bucket/prefix), creating the bucket."""
    import fsspec

    filesystem = fsspec.filesystem("s3", skip_instance_cache=True)
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    if not filesystem.exists(bucket):
        filesystem.mkdir(bucket)
    filesystem.put(str(local), url, recursive=True)
