"""launch/slurm/pretrain.sbatch submitted to a real Slurm (munged, slurmctld and slurmd on 127.0.0.1,
tests/slurm_cluster.py) as a user types it: sbatch options first, launch/pretrain.sh's arguments after the script.
A run that reaches its last step completes the job; a run stopped by SIGTERM to the job's step (what
`--signal=TERM@T` delivers before the time limit) writes a checkpoint, the job requeues itself and the
requeued job continues from that checkpoint to the last step, its output appended to the same log."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from pipeline.training import checkpointing
from pipeline.training.distributed import free_port
from tests.pretrain_runs import ROOT, cpu_env, status, training_steps
from tests.slurm_cluster import GPUS, NODE, SlurmCluster, slurm_cluster  # noqa: F401 (fixture)

SCRIPT = ROOT / "launch" / "slurm" / "pretrain.sbatch"
# The states of a job that will not run again (a requeued job goes back to PENDING instead).
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_job_left_running(slurm_cluster):  # noqa: F811
    yield
    slurm_cluster.cancel_jobs()


def submit(cluster: SlurmCluster, directory: Path, dataset: Path, run: Path, *arguments: str) -> str:
    """The script as a user submits it, from `directory` (where its log goes); the sbatch options override the
    script's 16-node defaults for this one node, whose GPUs exist as a count only (the ranks run on CPU)."""
    command = ["sbatch", "--parsable", "--nodes", "1", "--gpus-per-node", str(GPUS)]
    command += ["--cpus-per-task", str(cluster.cpus), str(SCRIPT)]
    # On CPU the launcher starts one rank per node unless told otherwise: two, one per declared GPU.
    command += ["--phase", "tiny", "--gpus-per-node", str(GPUS), "--master-port", str(free_port())]
    command += ["--dataset", str(dataset), "--output", str(run), "--tracking-uri", "off", "--set", "register=false"]
    command += arguments
    result = cluster.run(*command, cwd=directory, env=cpu_env())
    return result.stdout.strip().split(";")[0]


def job_log(directory: Path, job_id: str) -> Path:
    return directory / f"bert-pretrain-{job_id}.log"  # the script's --output=%x-%j.log


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for(condition, what: str, cluster: SlurmCluster, log: Path, timeout: float, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s\n--- job log\n{read(log)[-4000:]}\n{cluster.log_tails()}")
        time.sleep(every)


def wait_for_end(cluster: SlurmCluster, job_id: str, log: Path, timeout: float) -> dict[str, str]:
    wait_for(lambda: cluster.job(job_id).get("JobState") in ENDED, f"job {job_id} did not end", cluster, log, timeout)
    return cluster.job(job_id)


def test_a_run_that_reaches_its_last_step_completes_the_job(slurm_cluster, pretraining_dataset, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    job_id = submit(slurm_cluster, tmp_path, pretraining_dataset, run)
    log = job_log(tmp_path, job_id)
    job = wait_for_end(slurm_cluster, job_id, log, timeout=180)
    text = read(log)
    assert (job["JobState"], job["ExitCode"], job["Restarts"]) == ("COMPLETED", "0:0", "0"), text[-4000:]

    # One launcher on the allocation's node, its hostfile built from the allocation and its GPU count.
    assert f"pretrain.sbatch: job {job_id} (restart 0): run {run} from step 0 on {NODE}, master {NODE}" in text
    assert f"pretrain.sh: starting {GPUS} ranks on this node" in text
    assert (run / "hostfile.slurm").read_text() == f"{NODE} slots={GPUS}\n"
    # The trainer's own output, in the job's log.
    assert "training from step 0 to 40" in text
    assert "pretrain.sbatch: srun exit 0; run status: finished at step 40" in text
    assert "requeueing" not in text
    assert [record["step"] for record in training_steps(run)] == list(range(1, 41))
    final = status(run)
    assert (final["state"], final["step"], final["checkpoint"]) == ("finished", 40, checkpointing.tag_for(40))
    assert (run / "checkpoints" / checkpointing.tag_for(40)).is_dir()


def test_a_signalled_run_checkpoints_requeues_and_continues_to_its_last_step(
    slurm_cluster,  # noqa: F811
    pretraining_dataset,
    tmp_path,
):
    run = tmp_path / "run"
    steps = 20
    job_id = submit(slurm_cluster, tmp_path, pretraining_dataset, run, "--set", f"train_steps={steps}")
    log = job_log(tmp_path, job_id)
    trained = lambda: any(record["step"] >= 3 for record in training_steps(run))  # noqa: E731
    wait_for(trained, "no step 3", slurm_cluster, log, timeout=150, every=0.05)
    assert slurm_cluster.job(job_id)["Restarts"] == "0"

    # What Slurm does at --signal=TERM@T before the time limit: SIGTERM to the step's processes, not the batch shell.
    slurm_cluster.run("scancel", "--signal=TERM", job_id)
    requeued = lambda: slurm_cluster.job(job_id).get("Restarts") == "1"  # noqa: E731
    wait_for(requeued, "the job was not requeued", slurm_cluster, log, timeout=120)
    job = wait_for_end(slurm_cluster, job_id, log, timeout=180)
    text = read(log)
    assert (job["JobState"], job["ExitCode"], job["Restarts"]) == ("COMPLETED", "0:0", "1"), text[-4000:]

    # The first part stopped after a step with a checkpoint and requeued the job ...
    stopped = re.search(r"pretrain\.sbatch: stopped at step (\d+) with a checkpoint; requeueing job (\d+)", text)
    assert stopped and stopped.group(2) == job_id, text[-4000:]
    step = int(stopped.group(1))
    assert 3 < step < steps
    assert "pretrain.sh: stopped by a signal after writing a checkpoint; continue with --resume auto" in text
    # ... and the requeued job, in the same log, continued from that checkpoint to the last step.
    first, second = text.split(f"pretrain.sbatch: job {job_id} (restart 1)")
    assert "training from step 0 to" in first and "run status:" not in first
    assert second.startswith(f": run {run} from step {step} on {NODE}, master {NODE}\n")
    assert f"loading checkpoint {checkpointing.tag_for(step)}" in second
    assert f"training from step {step} to {steps}" in second
    assert f"pretrain.sbatch: srun exit 0; run status: finished at step {steps}" in second
    assert "requeueing" not in second
    assert [record["step"] for record in training_steps(run)] == list(range(1, steps + 1))
    final = status(run)
    assert (final["state"], final["step"], final["checkpoint"]) == ("finished", steps, checkpointing.tag_for(steps))
