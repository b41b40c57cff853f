"""A real sshd on 127.0.0.1 for the multi-node tests: its own host key, a client key in authorized_keys, and the
ssh options pdsh passes on (PDSH_SSH_ARGS_APPEND), so that no file in the user's ~/.ssh is touched. The two
names 127.0.0.1 and localhost reach it as two "nodes"."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.training.distributed import free_port
from tests.programs import require


class SshHosts:
    def __init__(self, directory: Path):
        sshd = require(
            ("sshd", "ssh", "ssh-keygen", "pdsh"), "the multi-node tests", "openssh-server openssh-client pdsh"
        )["sshd"]
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)], check=True)
        (directory / "authorized_keys").write_bytes((directory / "client_key.pub").read_bytes())
        self.port = free_port()
        config = directory / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {directory / 'host_key'}\n"
            f"AuthorizedKeysFile {directory / 'authorized_keys'}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
            f"PidFile {directory / 'sshd.pid'}\nAcceptEnv *\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        self.log = directory / "sshd.log"
        self.process = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)], stderr=self.log.open("wb"), start_new_session=True
        )
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", self.port)) != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        self.ssh_options = (
            f"-i {directory / 'client_key'} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            f"-o LogLevel=ERROR -o BatchMode=yes"
        )

    @property
    def environment(self) -> dict[str, str]:
        """What the launching process needs for pdsh to reach this sshd (the port goes by --ssh-port)."""
        return {"PDSH_SSH_ARGS_APPEND": self.ssh_options}

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def ssh_hosts(tmp_path_factory) -> Iterator[SshHosts]:
    hosts = SshHosts(tmp_path_factory.mktemp("sshd"))
    yield hosts
    hosts.stop()
