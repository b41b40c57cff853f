"""`pipeline.launch.hostfile`: Slurm node lists expanded as `scontrol show hostnames` does, and the hostfile written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.launch.hostfile import expand_nodelist, hostfile_text, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("node1", ["node1"]),
        ("node1,node7,login", ["node1", "node7", "login"]),
        ("gpu[01-03,07]", ["gpu01", "gpu02", "gpu03", "gpu07"]),
        ("n[1-3]", ["n1", "n2", "n3"]),
        ("n[8-11]", ["n8", "n9", "n10", "n11"]),
        ("n[098-101]", ["n098", "n099", "n100", "n101"]),
        ("n[007]", ["n007"]),
        ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
        ("a[1,3]b[0-1]c", ["a1b0c", "a1b1c", "a3b0c", "a3b1c"]),
        ("gpu[01-02],cpu[1,3],head", ["gpu01", "gpu02", "cpu1", "cpu3", "head"]),
        (
            "node-1.cluster.local,node-[2-3].cluster.local",
            ["node-1.cluster.local", "node-2.cluster.local", "node-3.cluster.local"],
        ),
        ("[1-2]", ["1", "2"]),
        ("n[1-2],n1", ["n1", "n2", "n1"]),
        ("  n[1-2]\n", ["n1", "n2"]),
    ],
)
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize(
    ("nodelist", "problem"),
    [
        ("", "empty Slurm node list ''"),
        ("   ", "empty Slurm node list '   '"),
        ("gpu[01-03", "unbalanced '['"),
        ("gpu01-03]", "']' without a matching '['"),
        ("gpu[1-[2]]", "nested '['"),
        ("n[5-2]", "range 5-2 in [5-2] starts after it ends"),
        ("n[]", "empty brackets in 'n[]'"),
        ("n[1-2,,4]", "which is not a number"),
        ("n[a-c]", "'a-c', which is not a number"),
        ("n[1-]", "'1-', which is not a number"),
        ("n[1-2-3]", "'1-2-3', which is not a number"),
        ("n1,,n2", "empty name between commas"),
        ("n1,", "empty name between commas"),
        ("n1 n2", "whitespace inside 'n1 n2'"),
        ("n[1-100000]", "more than 65536 hosts"),
    ],
)
def test_malformed_nodelist_raises(nodelist, problem):
    with pytest.raises(ValueError) as caught:
        expand_nodelist(nodelist)
    message = str(caught.value)
    assert repr(nodelist) in message
    assert problem in message


def test_hostfile_text():
    assert hostfile_text(["gpu01", "gpu02"], 8) == "gpu01 slots=8\ngpu02 slots=8\n"
    assert hostfile_text(["solo"], 1) == "solo slots=1\n"


@pytest.mark.parametrize(
    ("hosts", "slots", "problem"),
    [
        (["a", "b", "a"], 4, "host 'a' appears more than once"),
        (["a"], 0, "slots must be a whole number of at least 1"),
        (["a"], -2, "got -2"),
        ([], 4, "no hosts"),
        (["a b"], 4, "contains whitespace"),
    ],
)
def test_hostfile_text_rejects(hosts, slots, problem):
    with pytest.raises(ValueError) as caught:
        hostfile_text(hosts, slots)
    assert problem in str(caught.value)


def test_main_in_process(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[09-10]")
    out = tmp_path / "hostfile"
    assert main(["--slots", "2", "--out", str(out)]) == 0
    assert out.read_text() == "gpu09 slots=2\ngpu10 slots=2\n"
    assert capsys.readouterr().out == "gpu09\n"
    assert [p.name for p in tmp_path.iterdir()] == ["hostfile"]  # no temporary file left behind

    assert main(["--slurm-nodelist", "a[1-2],b", "--print-hosts"]) == 0
    assert capsys.readouterr().out == "a1\na2\nb\n"


def test_main_errors_in_process(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    with pytest.raises(SystemExit) as caught:
        main(["--print-hosts"])
    assert caught.value.code == 2
    assert "set SLURM_JOB_NODELIST" in capsys.readouterr().err

    with pytest.raises(SystemExit) as caught:
        main(["--slurm-nodelist", "n1", "--out", str(tmp_path / "h")])
    assert caught.value.code == 2
    assert "--out needs --slots" in capsys.readouterr().err

    assert main(["--slurm-nodelist", "n1,n1", "--slots", "4", "--out", str(tmp_path / "h")]) == 2
    assert "appears more than once" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

    missing = tmp_path / "no-such-dir" / "hostfile"
    assert main(["--slurm-nodelist", "n1", "--slots", "4", "--out", str(missing)]) == 2
    assert f"cannot write the hostfile {missing}: No such file or directory" in capsys.readouterr().err


def run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.launch.hostfile", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env if env is not None else os.environ.copy(),
    )


def test_module_writes_hostfile(tmp_path):
    out = tmp_path / "hostfile"
    result = run_module("--slurm-nodelist", "n[1-2]", "--slots", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "n1\n"
    assert result.stderr == ""
    assert out.read_text() == "n1 slots=4\nn2 slots=4\n"


def test_module_error_exit_code(tmp_path):
    out = tmp_path / "hostfile"
    result = run_module("--slurm-nodelist", "n[3-1]", "--slots", "4", "--out", str(out))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "malformed Slurm node list 'n[3-1]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()

    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_NODELIST"}
    result = run_module("--print-hosts", env=env)
    assert result.returncode == 2
    assert "set SLURM_JOB_NODELIST" in result.stderr and "--slurm-nodelist" in result.stderr
    assert "Traceback" not in result.stderr
