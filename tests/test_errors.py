"""Errors meant for the user derive from one base, BertpipeError: the command line prints its message and hint
without a traceback and exits with its code; any other exception is a bug and keeps its traceback."""

from __future__ import annotations

import importlib
import inspect
import pickle
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.data.shard_reader import ShardError
from pipeline.launch import launcher
from preprocessing.errors import BertpipeError, MissingInputError

ROOT = Path(__file__).resolve().parents[1]
# Exceptions that never reach a command line: tracking's internal stop signal; the demo's own command line
# reports its failed steps itself.
INTERNAL = {"pipeline.handoff.tracking.TrackingOff"}
# A run that failed while running exits 1; every other error is the input's or the command line's: exit 2.
RUN_FAILURES = {
    "pipeline.data.shard_reader.ShardError",
    "pipeline.training.pretrain.NonFiniteLossError",
    "pipeline.finetune.trainer.NonFiniteLossError",
    "pipeline.finetune.trainer.CheckpointWriteError",
    "pipeline.training.metrics.MetricsWriteError",
}


@pytest.fixture(autouse=True)
def _not_verbose(monkeypatch):
    """`--verbose` (or BERTPIPE_VERBOSE) re-raises; `logs.configure` sets the variable, monkeypatch restores it."""
    monkeypatch.setenv("BERTPIPE_VERBOSE", "0")


def test_the_base_carries_the_message_the_hint_and_the_exit_code():
    error = MissingInputError("checkpoint runs/x does not exist", hint="pass a run's output directory")
    assert str(error) == "checkpoint runs/x does not exist" and error.hint == "pass a run's output directory"
    assert error.exit_code == 2 and isinstance(error, FileNotFoundError)
    assert BertpipeError("no hint").hint is None
    assert ShardError("shard a.tar is corrupt").exit_code == 1 and isinstance(ShardError("x"), RuntimeError)
    copied = pickle.loads(pickle.dumps(error))  # errors cross process boundaries (loader workers, Beam)
    assert (type(copied), str(copied), copied.hint) == (MissingInputError, str(error), error.hint)


def test_a_missing_checkpoint_is_reported_with_its_hint_and_exit_2(tmp_path, capsys):
    code = cli.main(["export", "--checkpoint", str(tmp_path / "absent"), "--out", str(tmp_path / "hf")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines()[-2:] == [
        f"error: checkpoint {tmp_path / 'absent'} does not exist",
        "hint: --checkpoint takes a run's output directory, its checkpoints/ directory or a step directory",
    ]
    assert "Traceback" not in err and not (tmp_path / "hf").exists()


def test_a_pretrain_config_that_fails_validation_exits_2_before_anything_runs(tmp_path, capsys):
    config = ROOT / "launch" / "configs" / "tiny"
    arguments = ["--config", str(config), "--dataset", str(tmp_path / "data"), "--output", str(tmp_path / "run")]
    code = cli.main(["pretrain", *arguments, "--set", "lr_decay=cosine"])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: lr_decay must be one of ('linear', 'polynomial', 'polynomial_total', 'constant'), not" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_a_run_failure_exits_with_its_own_code(tmp_path, capsys, monkeypatch):
    def fails(args, extra):
        raise ShardError("shard train-000001.tar is corrupt", hint="rerun `bertpipe preprocess`")

    monkeypatch.setattr(cli, "_export", fails)
    assert cli.main(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "hf")]) == 1
    assert capsys.readouterr().err.splitlines()[-2:] == [
        "error: shard train-000001.tar is corrupt",
        "hint: rerun `bertpipe preprocess`",
    ]


@pytest.mark.parametrize("unexpected", [ValueError("a bug"), FileNotFoundError("a bug"), RuntimeError("a bug")])
def test_an_unexpected_exception_keeps_its_traceback(tmp_path, monkeypatch, unexpected):
    """What used to be exit 2 with one line (any ValueError, e.g. from a library) now propagates."""

    def fails(args, extra):
        raise unexpected

    monkeypatch.setattr(cli, "_export", fails)
    with pytest.raises(type(unexpected), match="a bug"):
        cli.main(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "hf")])


def test_verbose_shows_the_traceback_of_a_reported_error_too(tmp_path):
    with pytest.raises(MissingInputError, match="does not exist"):
        cli.main(["--verbose", "export", "--checkpoint", str(tmp_path / "absent"), "--out", str(tmp_path / "hf")])


def test_the_launcher_reports_a_project_error_with_its_exit_code(tmp_path, capsys):
    """A node list that cannot be expanded is the hostfile module's error; the launcher reports it as its own."""
    arguments = ["pretrain", "--phase", "tiny", "--output", str(tmp_path / "run"), "--gpus-per-node", "1"]
    assert launcher.main(arguments, env={"SLURM_JOB_NODELIST": "n[3-1]"}) == 2
    err = capsys.readouterr().err
    assert "pretrain.sh: malformed Slurm node list 'n[3-1]': range 3-1 in [3-1] starts after it ends" in err
    assert "Traceback" not in err


def project_modules() -> list[str]:
    """Every module of model, preprocessing and pipeline, less the demo's."""
    names = []
    for package in ("model", "preprocessing", "pipeline"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] in ("__init__", "__main__") or parts[:2] == ("pipeline", "demo"):
                continue
            names.append(".".join(parts))
    return names


def test_every_error_the_command_line_can_report_derives_from_the_base_with_its_exit_code():
    found, outside, codes = [], [], {}
    for name in project_modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == name:
                qualified = f"{name}.{value.__name__}"
                found.append(qualified)
                if issubclass(value, BertpipeError):
                    codes[qualified] = value.exit_code
                elif qualified not in INTERNAL:
                    outside.append(qualified)
    assert outside == []
    assert {name for name, code in codes.items() if code == 1} == RUN_FAILURES
    assert set(codes.values()) == {1, 2}
    assert len(found) >= 20, found  # the walk saw the modules (pipeline.finetune included)
    assert "pipeline.finetune.labels.DataError" in found and "pipeline.finetune.trainer.CheckpointWriteError" in found
