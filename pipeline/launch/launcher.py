"""Starting a training job on this machine or many: what `launch/pretrain.sh` and `launch/finetune.sh` share.

The scripts find Python and hand their arguments here (`python -m pipeline.launch.launcher pretrain|finetune ARGS`).
This module splits the launcher's options from the job's, finds the hostfile (HOSTFILE, else one built from a
Slurm allocation, else `launch/hostfile`), checks that a start over ssh has what it needs on this node (pdsh
and ssh), writes the environment the remote ranks need into a DeepSpeed environment file (its launcher forwards
only a few variables over ssh), and runs DeepSpeed's launcher in its own process group, so that SIGTERM or
SIGINT reaches every rank; afterwards it reads the run's status back and says whether a checkpoint was written.

The launcher starts the same script once per rank (`--no_python`); with RANK and LOCAL_RANK set, this module
then replaces itself with the job (`bertpipe pretrain` or `bertpipe finetune TASK`)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.launch import hostfile as hostfiles
from pipeline.training import cpu_ops
from preprocessing.errors import BertpipeError, report

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"
DEFAULT_MASTER_PORT = 29500
PHASE_CONFIGS = {"1": "phase1", "2": "phase2", "tiny": "tiny"}
TASKS = ("classify", "ner", "qa")
LAUNCHERS = ("pdsh", "openmpi", "mvapich", "slurm", "mpich", "impi")
# What a rank on another node needs from this environment, beyond what DeepSpeed forwards itself (MLFLOW*,
# PYTHON*, NCCL*, ...). Credentials are not written to disk: remote nodes use their own.
FORWARDED_PREFIXES = ("BERTPIPE_", "DS_ACCELERATOR", "HF_", "TRANSFORMERS_", "OMP_NUM_THREADS", "TORCH_", "GLOO_")
FORWARDED_EXCLUDED = ("HF_TOKEN",)
ENV_FILE = "launch.env"
# Rank-mode markers the launcher sets for each rank it starts.
RANK_VARIABLES = ("RANK", "LOCAL_RANK")


class LaunchError(BertpipeError):
    """A launch that cannot go ahead; the message says what to change. Exit code 2."""


@dataclass
class LaunchOptions:
    nodes: int | None = None
    gpus_per_node: int | None = None
    master_addr: str | None = None
    master_port: int = DEFAULT_MASTER_PORT
    no_ssh: bool = False
    node_rank: int | None = None
    launcher: str | None = None  # DeepSpeed's multi-node backend; pdsh when left out
    ssh_port: int | None = None
    no_ssh_check: bool = False  # skip DeepSpeed's `ssh HOST hostname` probe (it reads only ~/.ssh/config)
    print_command: bool = False
    verbose: bool = False  # DeepSpeed's launcher logs at INFO, the job's engines too (BERTPIPE_VERBOSE=1)


# The launcher's options: name -> (field, type; None for a flag).
OPTIONS: dict[str, tuple[str, type | None]] = {
    "--nodes": ("nodes", int),
    "--gpus-per-node": ("gpus_per_node", int),
    "--master-addr": ("master_addr", str),
    "--master-port": ("master_port", int),
    "--no-ssh": ("no_ssh", None),
    "--node-rank": ("node_rank", int),
    "--launcher": ("launcher", str),
    "--ssh-port": ("ssh_port", int),
    "--no-ssh-check": ("no_ssh_check", None),
    "--print-command": ("print_command", None),
    "--verbose": ("verbose", None),
}


def split_arguments(argv: Sequence[str], env: Mapping[str, str]) -> tuple[LaunchOptions, list[str]]:
    """(the launcher's options, the job's arguments in their order). `--opt VALUE` and `--opt=VALUE` both work;
    the launcher's own `--local_rank=N` is dropped (the job reads LOCAL_RANK)."""
    options = LaunchOptions(master_port=int(env.get("MASTER_PORT", DEFAULT_MASTER_PORT)))
    if env.get("SLURM_NODEID"):
        options.node_rank = int(env["SLURM_NODEID"])
    job: list[str] = []
    arguments = list(argv)
    while arguments:
        argument = arguments.pop(0)
        name, has_value, inline = argument.partition("=")
        if name == "--local_rank":
            continue
        if name not in OPTIONS:
            job.append(argument)
            continue
        attribute, kind = OPTIONS[name]
        if kind is None:
            setattr(options, attribute, True)
            continue
        if not has_value:
            if not arguments:
                raise LaunchError(f"{name} needs a value")
            inline = arguments.pop(0)
        try:
            setattr(options, attribute, kind(inline))
        except ValueError:
            raise LaunchError(f"{name} needs a number, got {inline!r}") from None
    if options.launcher is not None and options.launcher not in LAUNCHERS:
        raise LaunchError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {options.launcher!r}")
    return options, job


def value_of(arguments: Sequence[str], name: str) -> str | None:
    """The last value given to `name` among the job's arguments (`--name V` or `--name=V`)."""
    found = None
    for index, argument in enumerate(arguments):
        if argument == name and index + 1 < len(arguments):
            found = arguments[index + 1]
        elif argument.startswith(name + "="):
            found = argument.split("=", 1)[1]
    return found


def without(arguments: Sequence[str], name: str) -> list[str]:
    """The arguments less every `name V` / `name=V`."""
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == name:
            skip = True
        elif not argument.startswith(name + "="):
            kept.append(argument)
    return kept


@dataclass
class Job:
    """One of the two jobs the launcher starts: its script, how a rank runs it, where its run directory is."""

    kind: str  # pretrain or finetune: the `bertpipe` subcommand
    script: str  # the script's name, for messages
    rank_command: list[str]  # what each rank runs (after `python`)
    script_arguments: list[str]  # what the launcher passes back to the script on each rank
    output: Path | None
    single_process: bool = False  # run the job here, without DeepSpeed's launcher
    status_file: Path | None = None
    notes: list[str] = field(default_factory=list)


def pretrain_job(arguments: list[str]) -> Job:
    phase, config = value_of(arguments, "--phase"), value_of(arguments, "--config")
    rest = without(without(arguments, "--phase"), "--config")
    if config is None:
        if phase is None:
            raise LaunchError("give --phase 1, 2 or tiny, or --config DIR")
        if phase not in PHASE_CONFIGS:
            raise LaunchError(f"--phase must be 1, 2 or tiny, got '{phase}'")
        config = str(LAUNCH / "configs" / PHASE_CONFIGS[phase])
    if not Path(config).is_dir():
        raise LaunchError(f"config directory {config} does not exist")
    output = value_of(rest, "--output")
    if output is None:
        raise LaunchError("--output DIR is required")
    return Job(
        kind="pretrain",
        script="pretrain.sh",
        rank_command=["-m", "pipeline.cli", "pretrain", "--config", config, *rest],
        script_arguments=["--config", config, *rest],
        output=Path(output),
        status_file=Path(output) / "run_status.json",
    )


def finetune_job(arguments: list[str]) -> Job:
    if not arguments or arguments[0] not in TASKS:
        got = arguments[0] if arguments else ""
        raise LaunchError(f"the first argument is the task: classify, ner or qa (got '{got}')")
    task, rest = arguments[0], arguments[1:]
    output = value_of(rest, "--output")
    return Job(
        kind="finetune",
        script="finetune.sh",
        rank_command=["-m", "pipeline.cli", "finetune", task, *rest],
        script_arguments=[task, *rest],
        output=Path(output) if output else None,
        status_file=Path(output) / "run_status.json" if output else None,
    )


JOBS = {"pretrain": pretrain_job, "finetune": finetune_job}


def find_hostfile(job: Job, options: LaunchOptions, env: Mapping[str, str]) -> Path | None:
    """HOSTFILE, else one written from the Slurm allocation into the run directory, else launch/hostfile when
    it exists; None for a run on this machine alone."""
    if env.get("HOSTFILE"):
        path = Path(env["HOSTFILE"])
        if not path.is_file():
            raise LaunchError(f"HOSTFILE={path} does not exist")
        return path
    if env.get("SLURM_JOB_NODELIST"):
        if job.output is None:
            raise LaunchError("inside a Slurm allocation give --output DIR: the hostfile is written there")
        slots = options.gpus_per_node or slurm_gpus(env)
        hosts = hostfiles.expand_nodelist(env["SLURM_JOB_NODELIST"])  # a HostfileError says what is wrong
        text = hostfiles.hostfile_text(hosts, slots)
        job.output.mkdir(parents=True, exist_ok=True)
        path = job.output / "hostfile.slurm"
        hostfiles.write_atomically(str(path), text)
        return path
    default = LAUNCH / "hostfile"
    return default if default.is_file() else None


def slurm_gpus(env: Mapping[str, str]) -> int:
    """Ranks per node inside a Slurm allocation: its GPUs per node (one rank on CPU). An allocation that does not
    say is an error, not one rank per node: eight GPUs of a node would sit idle."""
    if env.get("SLURM_GPUS_ON_NODE"):
        return int(env["SLURM_GPUS_ON_NODE"].split("(")[0])
    if env.get("DS_ACCELERATOR") == "cpu":
        return 1
    raise LaunchError(
        "the Slurm allocation does not say how many GPUs each node has (no SLURM_GPUS_ON_NODE): request them "
        "with sbatch --gpus-per-node=G, or pass --gpus-per-node G"
    )


def hosts_of(hostfile: Path) -> list[str]:
    return [line.split()[0] for line in hostfile.read_text().splitlines() if line.strip() and not line.startswith("#")]


def used_hosts(hosts: list[str], options: LaunchOptions) -> list[str]:
    return hosts[: options.nodes] if options.nodes else hosts


def over_ssh(hosts: list[str], options: LaunchOptions) -> bool:
    """DeepSpeed starts ranks over ssh with pdsh (its default) when the run spans several hosts."""
    return len(used_hosts(hosts, options)) > 1 and not options.no_ssh and (options.launcher or "pdsh") == "pdsh"


def check_remote_start(hosts: list[str], options: LaunchOptions, which=shutil.which) -> None:
    """A start over ssh needs pdsh and ssh on this node."""
    if not over_ssh(hosts, options):
        return
    missing = [tool for tool in ("pdsh", "ssh") if which(tool) is None]
    if missing:
        raise LaunchError(
            f"starting ranks on {', '.join(hosts)} over ssh needs {' and '.join(missing)} on this node "
            f"(Debian/Ubuntu: apt-get install pdsh openssh-client), and passwordless ssh to every host; "
            f"or start each node yourself with --no-ssh --node-rank R, or choose --launcher openmpi|slurm"
        )


def forwarded_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The variables remote ranks need that DeepSpeed's launcher does not forward by itself."""
    return {
        name: value
        for name, value in sorted(env.items())
        if name.startswith(FORWARDED_PREFIXES) and name not in FORWARDED_EXCLUDED and "\n" not in value
    }


def write_environment_file(directory: Path, env: Mapping[str, str]) -> Path:
    """A DeepSpeed environment file (NAME=VALUE lines) with the forwarded variables and the lines of the
    user's own DS_ENV_FILE or ~/.deepspeed_env, which it replaces for this run."""
    lines = [f"{name}={value}" for name, value in forwarded_environment(env).items()]
    own = env.get("DS_ENV_FILE")
    for candidate in ([Path(own)] if own else []) + [Path.home() / ".deepspeed_env"]:
        if candidate.is_file():
            lines += [line for line in candidate.read_text().splitlines() if "=" in line]
            break
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ENV_FILE
    path.write_text("".join(line + "\n" for line in lines))
    return path


def launcher_command(
    job: Job, options: LaunchOptions, hostfile: Path | None, hosts: list[str], script: Path, python: str
) -> list[str]:
    command = [python, "-m", "deepspeed.launcher.runner", "--master_port", str(options.master_port)]
    master_addr = options.master_addr
    if hostfile is not None:
        command += ["--hostfile", str(hostfile)]
        master_addr = master_addr or hosts[0]
    if options.nodes is not None:
        command += ["--num_nodes", str(options.nodes)]
    if options.gpus_per_node is not None:
        command += ["--num_gpus", str(options.gpus_per_node)]
    if master_addr:
        command += ["--master_addr", master_addr]
    if options.no_ssh:
        if options.node_rank is None:
            raise LaunchError("--no-ssh needs --node-rank R (this node's index in the hostfile)")
        command += ["--no_ssh", "--node_rank", str(options.node_rank)]
    if options.launcher:
        command += ["--launcher", options.launcher]
    if options.ssh_port is not None:
        command += ["--ssh_port", str(options.ssh_port)]
    if options.no_ssh_check:
        command += ["--no_ssh_check"]
    command += ["--log_level", "info" if options.verbose else "warning"]
    return [*command, "--no_python", "--no_local_rank", str(script), *job.script_arguments]


def ranks_text(hosts: list[str], options: LaunchOptions) -> str:
    """`2 ranks on this machine`, `8 ranks per node on 2 nodes (a, b)`: what the launcher is about to start."""
    per_node = f"{options.gpus_per_node} ranks" if options.gpus_per_node else "a rank per GPU"
    used = used_hosts(hosts, options)
    if len(used) <= 1 or options.no_ssh:
        where = "on this node" if options.no_ssh else "on this machine"
        return f"{per_node} {where}"
    return f"{per_node} per node on {len(used)} nodes ({', '.join(used)})"


def cpu_threads(env: Mapping[str, str], ranks_per_node: int, cores: int) -> dict[str, str]:
    """OMP_NUM_THREADS for CPU ranks when the user has not set it: the node's cores shared out among its
    ranks, at least one each. Left alone, torch gives every rank all the cores, so N ranks run N times as
    many threads as there are cores: slower, and the floating-point sums of a run depend on the thread count
    (two runs of one seed agree bit for bit only with the same threads)."""
    if env.get("DS_ACCELERATOR") != "cpu" or env.get("OMP_NUM_THREADS"):
        return {}
    return {"OMP_NUM_THREADS": str(max(1, cores // max(1, ranks_per_node)))}


def run_status(status_file: Path | None) -> dict[str, Any]:
    """The run's run_status.json, or {} where there is none (a run that never started)."""
    try:
        status = json.loads(status_file.read_text()) if status_file else {}
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def stop_line(job: Job) -> tuple[str, int]:
    """What the launcher says after a signal stopped the run, and its exit code: 0 when the run kept what it
    had (pretraining: a checkpoint to resume from; fine-tuning: the best epoch that ended, exported)."""
    status = run_status(job.status_file)
    if status.get("state") == "interrupted" and status.get("checkpoint"):
        if job.kind == "pretrain":
            return f"{job.script}: stopped by a signal after writing a checkpoint; continue with --resume auto", 0
        return f"{job.script}: {status.get('message')} ({status['checkpoint']})", 0
    said = status.get("message") or f"run state: {status.get('state') or 'unknown'}"
    return f"{job.script}: stopped by a signal; nothing was kept at the stop ({said})", 1


def failure_line(job: Job, code: int) -> str:
    """What the launcher says when the ranks exit non-zero: what the run's status records (state, step, error,
    the checkpoint to resume from), so the exit code comes with its reason."""
    from pipeline.handoff.tracking import EXIT_NOT_REGISTERED

    status = run_status(job.status_file)
    state = status.get("state")
    if code == EXIT_NOT_REGISTERED and state == "finished":
        return f"{job.script}: the run finished, but a registration did not happen (exit {code}); the log says which"
    if state == "failed":
        checkpoint = status.get("checkpoint")
        resume = f"continue from {checkpoint} with --resume auto" if checkpoint else "no checkpoint to resume from"
        return (
            f"{job.script}: the run failed at step {status.get('step')} (exit {code}): {status.get('message') or '?'}; "
            f"{resume}"
        )
    return f"{job.script}: the ranks exited with code {code} (run state: {state or 'not recorded'}); the log says why"


def rank_pattern(job: Job) -> str:
    """A `pkill -f` pattern for this run's rank processes on any node: the job's module and its --output. Each
    regular-expression character is put in brackets, so the pattern does not match the shell that runs pkill."""
    literal = "".join(f"[{c}]" if c in ".[]()*+?{}|^$" else c for c in f"pipeline.cli {job.kind}")
    output = "".join(f"[{c}]" if c in ".[]()*+?{}|^$" else c for c in str(job.output))
    return f"{literal}.*--output {output}"


def remote_stop_command(job: Job, hosts: list[str]) -> list[str]:
    """SIGTERM to this run's ranks on every host, over pdsh: the ranks stop after a checkpoint while pdsh and
    ssh keep carrying their output (ending those instead leaves the ranks writing into closed connections)."""
    return ["pdsh", "-S", "-w", ",".join(hosts), "pkill", "-TERM", "-f", shlex.quote(rank_pattern(job))]


def pdsh_environment(env: Mapping[str, str], options: LaunchOptions) -> dict[str, str]:
    """What DeepSpeed's pdsh launcher sets for its own pdsh: ssh, and the ssh port."""
    extra = f" -p {options.ssh_port}" if options.ssh_port is not None else ""
    return {**env, "PDSH_RCMD_TYPE": "ssh", "PDSH_SSH_ARGS_APPEND": env.get("PDSH_SSH_ARGS_APPEND", "") + extra}


def run_in_group(command: list[str], env: Mapping[str, str], job: Job, remote_stop: list[str] | None) -> int:
    """Run `command` in its own process group and pass SIGTERM/SIGINT on: to every rank over pdsh when the ranks
    run over ssh (`remote_stop`), else to the whole group (the deepspeed runner alone does not pass signals on
    to ranks it starts locally); a second signal ends the group at once. Waits until every process of the
    group has ended (ranks may still be writing their checkpoint), then reports how a signalled run ended."""
    process = subprocess.Popen(command, env=dict(env), start_new_session=True)
    signalled: list[int] = []

    def forward(signum: int, _frame) -> None:
        signalled.append(signum)
        if remote_stop is not None and len(signalled) == 1:
            subprocess.Popen(remote_stop, env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    code = process.wait()
    while group_alive(process.pid):
        time.sleep(0.5)
    if signalled:
        line, code = stop_line(job)
        print(line, file=sys.stderr)
        return code
    if code:
        print(failure_line(job, code), file=sys.stderr)
    return code


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def script_usage(script: Path) -> str:
    """The script's header comment without its comment marks: the one place its usage is written."""
    lines = []
    for line in script.read_text().splitlines()[1:]:
        if line.startswith("set -euo pipefail"):
            break
        if line.startswith("#"):
            lines.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(lines)


def job_help(kind: str) -> str:
    """`bertpipe pretrain --help` or `bertpipe finetune --help`, as text (nothing is started)."""
    from pipeline.cli import build_parser

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
        build_parser().parse_args([kind, "--help"])
    return buffer.getvalue()


def run_script(script: str) -> None:
    """The Python half of `launch/pretrain.sh` and `launch/finetune.sh` (run when a launcher starts the file with
    Python): the job is the script's name."""
    sys.exit(main([Path(script).stem, *sys.argv[1:]]))


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if env is None else env)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in JOBS:
        print(f"usage: python -m pipeline.launch.launcher {{{','.join(JOBS)}}} ARGS", file=sys.stderr)
        return 2
    kind, script = argv[0], LAUNCH / f"{argv[0]}.sh"
    if {"-h", "--help"} & set(argv[1:]):
        print(script_usage(script))
        print(
            f"\nThe options of bertpipe {kind} (--config is set by --phase):\n"
            if kind == "pretrain"
            else f"\nThe options of bertpipe {kind}:\n"
        )
        print(job_help(kind), end="")
        return 0
    try:
        options, arguments = split_arguments(argv[1:], env)
        job = JOBS[kind](arguments)
        python = sys.executable
        if all(env.get(name) for name in RANK_VARIABLES):  # started by the launcher, once per rank
            os.execv(python, [python, *job.rank_command])
        hostfile = find_hostfile(job, options, env)
        hosts = hosts_of(hostfile) if hostfile is not None else []
        if options.gpus_per_node is None and env.get("DS_ACCELERATOR") == "cpu":
            options.gpus_per_node = 1
        single = kind == "finetune" and env.get("DS_ACCELERATOR") == "cpu" and options.gpus_per_node == 1
        if single and hostfile is None:
            command = [python, *job.rank_command]
        else:
            check_remote_start(hosts, options)
            command = launcher_command(job, options, hostfile, hosts, script, python)
    except BertpipeError as error:
        return report(error, script.name)
    if options.print_command:
        print(shlex.join(command))
        return 0
    if single and hostfile is None:
        os.execv(command[0], command)
    if options.verbose:
        env["BERTPIPE_VERBOSE"] = "1"
    env.update(cpu_threads(env, options.gpus_per_node or 1, len(os.sched_getaffinity(0))))
    if hostfile is not None and job.output is not None:
        env["DS_ENV_FILE"] = str(write_environment_file(job.output, env))
    if env.get("DS_ACCELERATOR") == "cpu" and not cpu_ops.built_before(env):
        # DeepSpeed compiles a shared-memory op at its first CPU run: build it once here, not in every rank.
        built = subprocess.run([python, "-m", "pipeline.training.cpu_ops"], env=env)
        if built.returncode:
            return 1
    count = env.get("OMP_NUM_THREADS", "")
    threads = f", {count} CPU thread{'' if count == '1' else 's'} each" if env.get("DS_ACCELERATOR") == "cpu" else ""
    print(
        f"{script.name}: starting {ranks_text(hosts, options)}{threads}: {shlex.join(command)}",
        file=sys.stderr,
        flush=True,
    )
    remote_stop = None
    if job.output is not None and over_ssh(hosts, options):
        env = pdsh_environment(env, options)
        remote_stop = remote_stop_command(job, used_hosts(hosts, options))
    return run_in_group(command, env, job, remote_stop)


if __name__ == "__main__":
    sys.exit(main())
