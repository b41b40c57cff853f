"""pipeline/launch/launcher.py's pieces: options split from the job's arguments, the checks before a start over ssh,
what is forwarded to remote ranks, the pattern that stops a run's ranks; and launch/finetune.sh under Slurm
and --no-ssh, like launch/pretrain.sh."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.launch.launcher import (
    Job,
    LaunchError,
    LaunchOptions,
    check_remote_start,
    cpu_threads,
    forwarded_environment,
    rank_pattern,
    split_arguments,
    write_environment_file,
)

ROOT = Path(__file__).resolve().parents[1]


def test_launcher_options_are_split_from_the_jobs_arguments():
    options, job = split_arguments(
        ["--nodes", "2", "--dataset", "d", "--ssh-port=2222", "--local_rank=0", "--no-ssh-check", "--set", "a=1"],
        {"MASTER_PORT": "29600", "SLURM_NODEID": "1"},
    )
    assert (options.nodes, options.ssh_port, options.no_ssh_check, options.master_port) == (2, 2222, True, 29600)
    assert options.node_rank == 1 and job == ["--dataset", "d", "--set", "a=1"]
    with pytest.raises(LaunchError, match="--nodes needs a number, got 'two'"):
        split_arguments(["--nodes", "two"], {})
    with pytest.raises(LaunchError, match="--launcher must be one of pdsh, openmpi"):
        split_arguments(["--launcher", "rsh"], {})
    with pytest.raises(LaunchError, match="--master-port needs a value"):
        split_arguments(["--master-port"], {})


def test_a_start_over_ssh_says_what_is_missing():
    nothing = lambda _: None  # noqa: E731
    with pytest.raises(LaunchError, match=r"over ssh needs pdsh and ssh on this node \(Debian/Ubuntu: apt-get"):
        check_remote_start(["a", "b"], LaunchOptions(), which=nothing)
    check_remote_start(["a"], LaunchOptions(), which=nothing)  # one host: no ssh
    check_remote_start(["a", "b"], LaunchOptions(nodes=1), which=nothing)
    check_remote_start(["a", "b"], LaunchOptions(no_ssh=True), which=nothing)
    check_remote_start(["a", "b"], LaunchOptions(launcher="openmpi"), which=nothing)


def test_remote_ranks_get_the_projects_variables_and_the_users_env_file_but_no_token(tmp_path):
    env = {"BERTPIPE_CACHE": "/c", "DS_ACCELERATOR": "cpu", "HF_HOME": "/h", "HF_TOKEN": "secret", "HOME": "/root"}
    assert forwarded_environment(env) == {"BERTPIPE_CACHE": "/c", "DS_ACCELERATOR": "cpu", "HF_HOME": "/h"}
    own = tmp_path / "mine.env"
    own.write_text("NCCL_IB_HCA=mlx5\n")
    path = write_environment_file(tmp_path / "run", {**env, "DS_ENV_FILE": str(own)})
    assert path.read_text().splitlines() == [
        "BERTPIPE_CACHE=/c",
        "DS_ACCELERATOR=cpu",
        "HF_HOME=/h",
        "NCCL_IB_HCA=mlx5",
    ]


def test_the_stop_pattern_matches_the_runs_ranks_and_not_the_shell_that_sends_it(tmp_path):
    job = Job("pretrain", "pretrain.sh", [], [], output=Path("/runs/large.v2"))
    pattern = re.compile(rank_pattern(job))
    rank = "/venv/bin/python -m pipeline.cli pretrain --config c --dataset d --output /runs/large.v2 --resume auto"
    assert pattern.search(rank)
    assert not pattern.search(rank.replace("large.v2", "large.v3")) and not pattern.search(
        rank.replace("large.v2", "largeXv2")
    )
    assert not pattern.search(f"pkill -TERM -f {rank_pattern(job)}")


def finetune_command(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {"PATH": "/usr/bin:/bin", "BERTPIPE_PYTHON": sys.executable, **env}
    return subprocess.run(
        [str(ROOT / "launch" / "finetune.sh"), *args, "--print-command"],
        capture_output=True,
        text=True,
        env=environment,
        cwd="/",
    )


def test_finetune_runs_under_slurm_and_without_ssh_like_pretraining(tmp_path):
    output = tmp_path / "ft"
    result = finetune_command(
        "classify", "--model", "m", "--train", "t", "--validation", "v", "--output", str(output), "--no-ssh",
        SLURM_JOB_NODELIST="gpu[07-08]", SLURM_GPUS_ON_NODE="8", SLURM_NODEID="1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"--hostfile {output}/hostfile.slurm --master_addr gpu07 --no_ssh --node_rank 1" in result.stdout
    assert result.stdout.strip().endswith(f"finetune.sh classify --model m --train t --validation v --output {output}")
    assert (output / "hostfile.slurm").read_text() == "gpu07 slots=8\ngpu08 slots=8\n"
    result = finetune_command("classify", "--output", str(output), DS_ACCELERATOR="cpu")
    assert result.returncode == 0 and "-m pipeline.cli finetune classify --output" in result.stdout  # one process
    result = finetune_command("summarize")
    assert result.returncode == 2 and "the first argument is the task: classify, ner or qa" in result.stderr


def test_a_slurm_allocation_that_does_not_say_its_gpus_is_an_error_not_one_rank_per_node(tmp_path):
    result = finetune_command("classify", "--output", str(tmp_path / "ft"), SLURM_JOB_NODELIST="gpu[1-2]")
    assert (
        result.returncode == 2 and "no SLURM_GPUS_ON_NODE): request them with sbatch --gpus-per-node" in result.stderr
    )
    result = finetune_command(
        "classify", "--output", str(tmp_path / "ft"), "--gpus-per-node", "4", SLURM_JOB_NODELIST="gpu[1-2]"
    )
    assert result.returncode == 0 and (tmp_path / "ft" / "hostfile.slurm").read_text() == "gpu1 slots=4\ngpu2 slots=4\n"


def test_inside_slurm_the_run_directory_is_needed_for_the_hostfile():
    result = finetune_command("classify", "--gpus-per-node", "4", SLURM_JOB_NODELIST="gpu[1-2]")
    assert result.returncode == 2 and "inside a Slurm allocation give --output DIR" in result.stderr


def test_cpu_ranks_share_the_cores_unless_the_user_set_the_threads():
    cpu = {"DS_ACCELERATOR": "cpu"}
    assert cpu_threads(cpu, ranks_per_node=2, cores=16) == {"OMP_NUM_THREADS": "8"}
    assert cpu_threads(cpu, ranks_per_node=3, cores=8) == {"OMP_NUM_THREADS": "2"}
    assert cpu_threads(cpu, ranks_per_node=4, cores=2) == {"OMP_NUM_THREADS": "1"}  # at least one
    assert cpu_threads({**cpu, "OMP_NUM_THREADS": "3"}, ranks_per_node=2, cores=16) == {}  # the user's
    assert cpu_threads({}, ranks_per_node=2, cores=16) == {}  # GPU ranks: torch's default
