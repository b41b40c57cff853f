"""Two "nodes" over real ssh: launch/pretrain.sh with a hostfile naming 127.0.0.1 and localhost, DeepSpeed's pdsh
launcher, a real sshd (tests/ssh_hosts.py). The ranks started over ssh get the environment they need, train, and
stop with a checkpoint when the launching script gets SIGTERM; nothing is left running."""

from __future__ import annotations

import json
import signal
import subprocess

import psutil
import pytest

from pipeline.training.distributed import free_port
from tests.pretrain_runs import PRETRAIN_SH, ROOT, cpu_env, training_steps, wait_for_step
from tests.ssh_hosts import ssh_hosts  # noqa: F401 (fixture)


def rank_processes(output) -> list[psutil.Process]:
    """The trainer processes of the run in `output` (their data-loader workers left out)."""
    found = []
    for process in psutil.process_iter(["cmdline", "name"]):
        command = " ".join(process.info["cmdline"] or [])
        if str(output) in command and "pipeline.cli" in command and process.info["name"] != "pt_data_worker":
            found.append(process)
    return found


def started_over_ssh(process: psutil.Process) -> bool:
    return any(parent.name() == "sshd" for parent in process.parents())


@pytest.mark.slow
def test_two_nodes_over_ssh_train_and_stop_with_a_checkpoint_on_sigterm(ssh_hosts, pretraining_dataset, tmp_path):  # noqa: F811
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("127.0.0.1 slots=1\nlocalhost slots=1\n")
    output = tmp_path / "run"
    command = [str(PRETRAIN_SH), "--phase", "tiny", "--ssh-port", str(ssh_hosts.port), "--no-ssh-check"]
    command += ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    command += ["--dataset", str(pretraining_dataset), "--output", str(output), "--set", "train_steps=400"]
    env = cpu_env(HOSTFILE=str(hostfile), BERTPIPE_TEST_MARK="from-the-launching-node", **ssh_hosts.environment)
    log = tmp_path / "launch.log"
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_for_step(process, output, 5, timeout=300)
    except AssertionError:
        process.kill()
        raise AssertionError(log.read_text()[-4000:]) from None
    forwarded = (output / "launch.env").read_text().splitlines()
    assert "DS_ACCELERATOR=cpu" in forwarded and "BERTPIPE_TEST_MARK=from-the-launching-node" in forwarded
    ranks = rank_processes(output)
    assert len(ranks) == 2 and all(started_over_ssh(rank) for rank in ranks)  # one per "node", by pdsh over ssh
    for rank in ranks:  # what the launching node set reached the ranks that sshd started
        assert rank.environ().get("BERTPIPE_TEST_MARK") == "from-the-launching-node"
        assert rank.environ().get("DS_ACCELERATOR") == "cpu"

    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=240)
    text = log.read_text()
    assert code == 0, text[-4000:]
    assert "stopped by a signal after writing a checkpoint; continue with --resume auto" in text
    status = json.loads((output / "run_status.json").read_text())
    assert status["state"] == "interrupted" and status["checkpoint"], status
    assert status["step"] == training_steps(output)[-1]["step"] < 400
    assert rank_processes(output) == []
