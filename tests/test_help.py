"""What a newcomer reads first: every launch script's and every `bertpipe` command's --help, and
`bertpipe --version`. Help exits 0, lists the options with their defaults, and starts nothing."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.launch import launcher
from pipeline.training.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
BERTPIPE = Path(sys.executable).parent / "bertpipe"

# script, arguments, options its help must list
SCRIPTS = [
    ("pretrain.sh", ["--help"], ["--phase", "--config", "--output", "--nodes", "--gpus-per-node", "--resume", "--set"]),
    ("pretrain.sh", ["--phase", "1", "--output", "{out}", "-h"], ["--master-port", "--init-from", "train_steps"]),
    ("finetune.sh", ["--help"], ["--gpus-per-node", "--no-ssh", "--model", "--epochs", "--doc-stride"]),
    ("finetune.sh", ["classify", "--output", "{out}", "--help"], ["--launcher", "--text-column", "--train"]),
    ("preprocess.sh", ["--output", "{out}", "--help"], ["--phase", "--output", "--dupe-factor", "--shard-mb"]),
    ("mlflow_server.sh", ["--dir", "{out}", "--help"], ["--port", "--host", "--dir", "--background", "--wait"]),
    ("slurm/pretrain.sbatch", ["--help"], ["--nodes", "--gpus-per-node", "--cpus-per-task", "--time", "--signal"]),
]


def run_script(name: str, arguments: list[str], out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, BERTPIPE_PYTHON=sys.executable, BERTPIPE=str(BERTPIPE))
    command = [str(LAUNCH / name), *(argument.replace("{out}", str(out)) for argument in arguments)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, cwd=out.parent)


@pytest.mark.parametrize(("name", "arguments", "options"), SCRIPTS)
def test_each_launch_script_answers_help_with_its_usage_and_starts_nothing(name, arguments, options, tmp_path):
    out = tmp_path / "output"
    result = run_script(name, arguments, out)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for option in options:
        assert option in result.stdout, f"{name} --help does not mention {option}"
    assert "--help" in result.stdout
    assert not out.exists()  # no run directory, no server store, no hostfile or launch.env
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_slurm_batch_script_run_outside_a_job_says_to_submit_it(tmp_path):
    env = {name: value for name, value in os.environ.items() if not name.startswith("SLURM_")}
    command = [str(LAUNCH / "slurm" / "pretrain.sbatch"), "--phase", "1", "--output", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2 and "pretrain.sbatch: submit it with sbatch" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("job", ["pretrain", "finetune"])
def test_the_launcher_help_runs_no_process(job, monkeypatch, capsys, tmp_path):
    def refuse(*_args, **_kwargs):
        raise AssertionError("--help started a process")

    for module, name in [(subprocess, "Popen"), (subprocess, "run"), (os, "execv"), (os, "execvp")]:
        monkeypatch.setattr(module, name, refuse)
    arguments = [job, *(["classify"] if job == "finetune" else []), "--output", str(tmp_path / "run"), "--help"]
    assert launcher.main(arguments, env={"DS_ACCELERATOR": "cpu"}) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(launcher.script_usage(LAUNCH / f"{job}.sh"))
    assert f"usage: bertpipe {job}" in printed
    assert not (tmp_path / "run").exists()


def all_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    parser = cli.build_parser()
    return [(parser.prog, parser)] + [(child.prog, child) for child in cli.subcommand_parsers(parser)]


def test_every_option_of_every_command_says_what_it_does_and_shows_its_default():
    for prog, parser in all_parsers():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{prog} {action.option_strings or action.dest} has no help text"
            shown = formatter._get_help_string(action)
            plain_default = action.default not in (None, False, [], argparse.SUPPRESS)
            if action.option_strings and plain_default and not isinstance(action, argparse._StoreConstAction):
                assert "default" in shown, f"{prog} {action.option_strings} hides its default {action.default!r}"


def subcommand(name: str) -> argparse.ArgumentParser:
    return next(parser for prog, parser in all_parsers() if prog == f"bertpipe {name}")


def test_preprocess_help_shows_the_defaults_of_the_job():
    text = " ".join(subcommand("preprocess").format_help().split())
    for expected in ["(default: 5)", "(default: 64.0)", "(default: 2.0)", "(default: 12345)", "(default: 0.01)"]:
        assert expected in text


def test_pretrain_help_lists_every_train_json_key_with_its_default():
    text = subcommand("pretrain").format_help()
    listed = dict(re.findall(r"^  (\w+) = (.+?)(?::|$)", text, flags=re.MULTILINE))
    assert sorted(listed) == sorted(field.name for field in dataclasses.fields(TrainConfig))
    assert listed["train_steps"] == "100" and listed["attention_init"] == '"local"'
    assert "steps between metrics records" in text  # the field's comment in train_config.py


def test_bertpipe_version_is_the_installed_one():
    from importlib.metadata import version

    result = subprocess.run([str(BERTPIPE), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == f"bertpipe {version('bertpipe')}"
