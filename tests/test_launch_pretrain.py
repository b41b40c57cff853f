"""launch/pretrain.sh: the deepspeed launcher command it builds (hostfile, Slurm, --no-ssh), its
errors, and its hand-over to the trainer when the launcher starts it once per rank."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "launch" / "pretrain.sh"


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    # A GPU machine's launch: the caller's DS_ACCELERATOR=cpu would make every node one rank.
    ignored = ("RANK", "LOCAL_RANK", "DS_ACCELERATOR", "MASTER_PORT")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in ignored}
    environment.update(BERTPIPE_PYTHON=sys.executable, **env)
    environment.pop("HOSTFILE", None) if "HOSTFILE" not in env else None
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=environment, cwd="/")


def command_of(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_single_node_phase_one(tmp_path):
    command = command_of(run("--phase", "1", "--dataset", "d", "--output", str(tmp_path), "--print-command"))
    assert "-m deepspeed.launcher.runner --master_port 29500" in command
    assert f"--no_python --no_local_rank {SCRIPT} --config {ROOT}/launch/configs/phase1" in command
    assert command.endswith(f"--dataset d --output {tmp_path}")
    assert "--hostfile" not in command or (ROOT / "launch" / "hostfile").is_file()


def test_hostfile_gives_master_address_and_nodes(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# cluster\nnode-a slots=8\nnode-b slots=8\n")
    result = run(
        "--phase", "2", "--nodes", "2", "--gpus-per-node", "4", "--master-port", "29611",
        "--dataset", "d", "--output", str(tmp_path / "run"), "--resume", "auto", "--print-command",
        HOSTFILE=str(hostfile),
    )  # fmt: skip
    command = command_of(result)
    assert f"--master_port 29611 --hostfile {hostfile} --num_nodes 2 --num_gpus 4 --master_addr node-a" in command
    assert command.endswith("--resume auto")


def test_slurm_allocation_builds_the_hostfile_and_uses_the_node_id_without_ssh(tmp_path):
    output = tmp_path / "run"
    result = run(
        "--phase", "1", "--no-ssh", "--dataset", "d", "--output", str(output), "--print-command",
        SLURM_JOB_NODELIST="gpu[07-08]", SLURM_GPUS_ON_NODE="8", SLURM_NODEID="1",
    )  # fmt: skip
    command = command_of(result)
    assert f"--hostfile {output}/hostfile.slurm --master_addr gpu07 --no_ssh --node_rank 1" in command
    assert (output / "hostfile.slurm").read_text() == "gpu07 slots=8\ngpu08 slots=8\n"


def test_errors_are_clear_and_exit_2(tmp_path):
    cases = [
        (("--phase", "3", "--output", "o"), "--phase must be 1, 2 or tiny, got '3'"),
        (("--output", "o"), "give --phase 1, 2 or tiny, or --config DIR"),
        (("--phase", "1"), "--output DIR is required"),
        (("--phase", "1", "--output", "o", "--no-ssh"), "--no-ssh needs --node-rank R"),
        (("--config", str(tmp_path / "none"), "--output", "o"), f"config directory {tmp_path / 'none'} does not exist"),
    ]
    for args, message in cases:
        result = run(*args, "--print-command")
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
    result = run("--phase", "1", "--output", "o", "--print-command", HOSTFILE=str(tmp_path / "missing"))
    assert result.returncode == 2 and f"HOSTFILE={tmp_path / 'missing'} does not exist" in result.stderr


def test_started_by_the_launcher_it_hands_over_to_the_trainer(tmp_path):
    """With RANK and LOCAL_RANK set (as the deepspeed launcher sets them) the script runs `bertpipe
    pretrain`; a missing dataset shows that the trainer got the arguments."""
    result = run(
        "--phase", "tiny", "--dataset", str(tmp_path / "absent"), "--output", str(tmp_path / "run"),
        "--local_rank=0", RANK="0", LOCAL_RANK="0",
    )  # fmt: skip
    assert result.returncode == 2
    assert f"error: dataset directory {tmp_path / 'absent'} does not exist" in result.stderr


def test_the_script_also_runs_as_python_as_the_deepspeed_command_runs_it(tmp_path):
    """`deepspeed launch/pretrain.sh ...` without --no_python runs `python launch/pretrain.sh` on each rank: the
    file is a Python program too, and hands over to the trainer the same way."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    environment.update(RANK="0", LOCAL_RANK="0")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--local_rank=0", "--phase", "tiny", "--dataset", str(tmp_path / "absent"),
         "--output", str(tmp_path / "run")],
        capture_output=True, text=True, env=environment, cwd="/",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"error: dataset directory {tmp_path / 'absent'} does not exist" in result.stderr


def test_the_finetune_script_runs_as_python_too_and_is_the_finetune_job():
    result = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("finetune.sh")), "--help"], capture_output=True, text=True, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Fine-tuning under the deepspeed launcher") and "bertpipe finetune" in result.stdout
