"""A real Slurm on 127.0.0.1 for the batch-script tests: munged, slurmctld and slurmd as this user's processes,
everything they write (key, socket, state, spool, logs, pid files) in a temporary directory and the clients
pointed at it by SLURM_CONF, so that nothing system-wide is read or touched. One node, `localhost`, with the
machine's CPUs and memory and two GPUs that are placeholder files (no device behind them): a job asks for them
with `--gpus-per-node` and Slurm sets SLURM_GPUS_ON_NODE, as it does on a GPU cluster."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import psutil
import pytest

from pipeline.training.distributed import free_port
from tests.programs import require

PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "scancel")
PACKAGES = "munge slurmctld slurmd slurm-client"
NODE = "localhost"  # a name every process on the machine resolves: the batch script makes it the master address
GPUS = 2
# How a job's state and fields read in `scontrol show job`: `Key=value` pairs separated by spaces.
FIELD = re.compile(r"(\w+)=(\S*)")


def memory_mb() -> int:
    """What slurmd will find: MemTotal, less a margin (a node that reports less than its configuration is
    drained)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 * 9 // 10
    raise AssertionError("no MemTotal in /proc/meminfo")


class SlurmCluster:
    def __init__(self, directory: Path):
        self.programs = require(PROGRAMS, "the Slurm tests", PACKAGES)
        self.directory = directory
        self.processes: list[subprocess.Popen] = []
        self.logs: dict[str, Path] = {}
        self.cpus = os.cpu_count() or 1
        self.conf = directory / "slurm.conf"
        try:
            self._start_munge()
            self._write_config()
            self._start(["slurmctld", "-D"], "slurmctld")
            self._start(["slurmd", "-D", "-N", NODE], "slurmd")
            self._wait_for_idle_node()
        except BaseException:
            self.stop()
            raise

    # -- start -------------------------------------------------------------------------------------

    def _start_munge(self) -> None:
        key_dir = self.directory / "munge"
        key_dir.mkdir(mode=0o700)
        key = key_dir / "munge.key"
        subprocess.run([self.programs["mungekey"], "--create", f"--keyfile={key}"], check=True)
        # munged wants the socket's directory searchable by everyone (0755); pytest's own directories are 0700,
        # which --force lets it accept: every client here is this user.
        socket_dir = self.directory / "run"
        socket_dir.mkdir()
        socket_dir.chmod(0o755)
        self.munge_socket = socket_dir / "munge.socket"
        command = ["munged", "--foreground", "--force", f"--socket={self.munge_socket}", f"--key-file={key}"]
        command += [f"--pid-file={socket_dir / 'munged.pid'}", f"--seed-file={key_dir / 'munged.seed'}"]
        self._start(command, "munged")
        self._wait(lambda: self.munge_socket.exists(), "munged did not create its socket", "munged")

    def _write_config(self) -> None:
        state, spool, run = self.directory / "state", self.directory / "spool", self.directory / "run"
        state.mkdir()
        spool.mkdir()
        # Slurm keeps only GPUs that name a file; with task/none nothing opens or binds them.
        devices = self.directory / "gpus"
        devices.mkdir()
        for index in range(GPUS):
            (devices / f"gpu{index}").touch()
        (self.directory / "gres.conf").write_text(f"NodeName={NODE} Name=gpu File={devices}/gpu[0-{GPUS - 1}]\n")
        lines = [
            "ClusterName=bertpipe",
            f"SlurmctldHost={NODE}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # A requeued job may start again only once its credential has expired: 120 s by default.
            f"AuthInfo=socket={self.munge_socket},cred_expire=10",
            f"StateSaveLocation={state}",
            f"SlurmdSpoolDir={spool}",
            f"SlurmctldPidFile={run / 'slurmctld.pid'}",
            f"SlurmdPidFile={run / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.directory / 'slurmctld.log'}",
            f"SlurmdLogFile={self.directory / 'slurmd.log'}",  # slurmstepd's too
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SchedulerType=sched/builtin",
            "SchedulerParameters=sched_interval=1",  # a requeued job whose wait is over starts within a second
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "ReturnToService=2",
            "MailProg=/bin/true",
            "GresTypes=gpu",
            f"NodeName={NODE} NodeHostname={NODE} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={memory_mb()} "
            f"Gres=gpu:{GPUS} State=UNKNOWN",
            "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("".join(line + "\n" for line in lines))

    def _start(self, command: list[str], name: str) -> None:
        log = self.directory / f"{name}.out"
        self.logs[name] = log
        with log.open("wb") as output:
            process = subprocess.Popen(
                [self.programs[command[0]], *command[1:]],
                env=self.environment(),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)

    def _wait_for_idle_node(self) -> None:
        def idle() -> bool:
            result = self.run("scontrol", "show", "node", NODE, check=False)
            return result.returncode == 0 and "State=IDLE" in result.stdout

        self._wait(idle, "the node did not come up idle", "slurmctld", "slurmd")

    def _wait(self, condition, message: str, *daemons: str, timeout: float = 60) -> None:
        """Polls `condition` until it holds; an error with the daemons' logs when one of them ends first or time
        runs out."""
        deadline = time.monotonic() + timeout
        while not condition():
            ended = [process.args[0] for process in self.processes if process.poll() is not None]
            if ended or time.monotonic() > deadline:
                raise AssertionError(f"{message} (ended: {ended or 'none'}):\n{self.log_tails(*daemons)}")
            time.sleep(0.2)

    # -- use ---------------------------------------------------------------------------------------

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """This process's environment with the clients pointed at this cluster (sbatch passes it on to the job)."""
        env = {name: value for name, value in {**os.environ, **(extra or {})}.items() if not name.startswith("SLURM_")}
        return {**env, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str, check: bool = True, env: Mapping[str, str] | None = None, **kwargs):
        result = subprocess.run(
            list(command), env=self.environment(env), capture_output=True, text=True, timeout=60, **kwargs
        )
        if check and result.returncode:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr}")
        return result

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, ExitCode, Restarts, ...); {} once Slurm has forgotten it."""
        result = self.run("scontrol", "show", "job", job_id, check=False)
        return dict(FIELD.findall(result.stdout)) if result.returncode == 0 else {}

    def log_tails(self, *daemons: str, size: int = 3000) -> str:
        """The end of each daemon's log file (its output where it has none: munged, or a start that failed)."""
        tails = []
        for name in daemons or tuple(self.logs):
            path = self.directory / f"{name}.log"
            if not path.exists():
                path = self.logs[name]
            tails.append(f"--- {path.name}\n{path.read_text(errors='replace')[-size:]}")
        return "\n".join(tails)

    # -- stop ------------------------------------------------------------------------------------------

    def cancel_jobs(self, timeout: float = 60) -> None:
        """Ends every job at once (SIGKILL to all its steps, then cancelled, pending or requeued ones too) and waits
        until Slurm lists none: a test that failed halfway leaves nothing running for the next."""
        jobs = self.run("squeue", "--noheader", "--format=%A", check=False).stdout.split()
        if not jobs:
            return
        self.run("scancel", "--signal=KILL", "--full", *jobs, check=False)
        self.run("scancel", *jobs, check=False)
        self._wait(
            lambda: not self.run("squeue", "--noheader", check=False).stdout.strip(),
            "jobs still listed",
            timeout=timeout,
        )

    def stop(self) -> None:
        """The jobs, the daemons' process groups (munged last), then whatever a job left behind: slurmstepd and the
        tasks it starts leave slurmd's session, and are known by the SLURM_CONF they inherit."""
        if all(process.poll() is None for process in self.processes):
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.cancel_jobs(timeout=30)
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        left = self.leftover_processes()
        for process in left:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(left, timeout=30)

    def leftover_processes(self) -> list[psutil.Process]:
        """This cluster's processes: those with its SLURM_CONF, and slurmstepd (which overwrites its environment
        with its title) by the log file it holds open."""
        found = []
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if process.pid == os.getpid():
                    continue
                files = (Path(file.path) for file in process.open_files())
                if process.environ().get("SLURM_CONF") == str(self.conf) or any(
                    file.is_relative_to(self.directory) for file in files
                ):
                    found.append(process)
        return found


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory) -> Iterator[SlurmCluster]:
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()
