"""metrics.jsonl when the disk refuses a write: the torn line is cut off again and the error says what to do.
The refusal is real: the writing process runs under a file-size limit (RLIMIT_FSIZE), which makes the kernel
stop a write part-way with EFBIG, as a full disk does with ENOSPC."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import resource, signal, sys
from pathlib import Path
from pipeline.training.metrics import JsonLines, MetricsWriteError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
path = Path(sys.argv[1])
metrics = JsonLines(path, None)
metrics.write({"step": 1, "loss": 7.0})
size = path.stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, resource.RLIM_INFINITY))
try:
    metrics.write({"step": 2, "loss": 6.5, "note": "x" * 200})
except MetricsWriteError as error:
    print(error)
    sys.exit(3)
sys.exit(0)
"""


def test_a_refused_write_leaves_only_whole_lines_and_a_clear_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    result = subprocess.run([sys.executable, "-c", WRITER, str(path)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 3, result.stderr
    assert f"cannot append to {path}: File too large (step 2); the run stops here: free space" in result.stdout
    assert path.read_text() == json.dumps({"step": 1, "loss": 7.0}) + "\n"  # the torn second line is gone


def test_throughput_reports_real_and_padded_rates_the_padding_share_and_the_wait(monkeypatch):
    from pipeline.training import metrics

    clock = iter([100.0, 104.0, 104.0])  # starts at 100 s, reported at 104 s, the next interval starts
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    throughput = metrics.Throughput()
    throughput.add(sequences=8, tokens=600, padded_tokens=1024)
    throughput.add(sequences=8, tokens=424, padded_tokens=1024)
    throughput.add_wait(1.0)
    assert throughput.report() == {
        "sequences_per_s": 4.0,
        "tokens_per_s": 256.0,
        "padded_tokens_per_s": 512.0,
        "padding_share": 0.5,
        "data_wait_share": 0.25,
        "mean_padded_length": 128.0,
    }
