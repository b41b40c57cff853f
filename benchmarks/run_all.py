"""`make bench`: every benchmark with the settings RESULTS.md reports, then the tables of RESULTS.md
rewritten from their JSON. The GPU runs (BERT-Large, bf16, seq 128 and 512, against Hugging Face) run
only where torch sees a GPU; elsewhere their earlier figures stay.

    python benchmarks/run_all.py [--only NAME ...] [--results DIR]

NAME: cpu_step preprocess compressed_memory plan loader packing learning task_reference gpu_step.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
# (seq, batch, compiled): the phase-1 and phase-2 shapes that fill an 80 GB GPU, and seq 128 eager.
NAMES = (
    "cpu_step", "preprocess", "compressed_memory", "plan", "loader", "packing", "learning", "task_reference",
    "gpu_step",
)  # fmt: skip
GPU_SHAPES = [(128, 256, True), (128, 256, False), (512, 64, True)]


def gpu_slug() -> str:
    """A short file-name part for the GPU, e.g. h100 for "NVIDIA H100 80GB HBM3"."""
    name = torch.cuda.get_device_name(0)
    match = re.search(r"\b([A-Z]+\d{2,4})\b", name)
    return match.group(1).lower() if match else re.sub(r"\W+", "_", name).strip("_").lower()


def commands(results: Path) -> dict[str, list[list[str]]]:
    python = sys.executable
    cpu_step = [python, str(BENCHMARKS / "model_step.py"), "--preset", "mini", "--batch", "32", "--seq", "128"]
    cpu_step += ["--steps", "10", "--warmup", "1", "--out", str(results / "model_step_cpu_mini.json")]
    plan = {
        "cpu_step": [cpu_step],
        "preprocess": [[python, str(BENCHMARKS / "preprocess.py"), "--out", str(results / "preprocess.json")]],
        "compressed_memory": [
            [python, str(BENCHMARKS / "compressed_memory.py"), "--out", str(results / "compressed_memory.json")]
        ],
        "plan": [[python, str(BENCHMARKS / "plan.py"), "--out", str(results / "plan.json")]],
        "loader": [[python, str(BENCHMARKS / "loader.py"), "--out", str(results / "loader.json")]],
        "packing": [[python, str(BENCHMARKS / "packing.py"), "--out", str(results / "packing.json")]],
        "learning": [[python, str(BENCHMARKS / "learning.py"), "--output-dir", str(results)]],
        "task_reference": [
            [python, str(BENCHMARKS / "task_reference.py"), "--out", str(results / "task_reference.json")]
        ],
        "gpu_step": [],
    }
    if torch.cuda.is_available():
        slug = gpu_slug()
        for seq, batch, compiled in GPU_SHAPES:
            mode = "compiled" if compiled else "eager"
            out = results / f"model_step_{slug}_large_seq{seq}_b{batch}_{mode}.json"
            command = [python, str(BENCHMARKS / "model_step.py"), "--device", "cuda", "--preset", "large"]
            command += ["--dtype", "bf16", "--seq", str(seq), "--batch", str(batch), "--steps", "20", "--warmup", "3"]
            plan["gpu_step"].append(command + (["--compile"] if compiled else []) + ["--out", str(out)])
        packing = [python, str(BENCHMARKS / "packing.py"), "--device", "cuda", "--preset", "large", "--dtype", "bf16"]
        packing += ["--batch", "64", "--repeat", "5", "--out", str(results / f"packing_{slug}_large.json")]
        plan["gpu_step"].append(packing)
    return plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=NAMES,
    )
    parser.add_argument("--results", type=Path, default=BENCHMARKS / "results")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    plan = commands(args.results)
    if not plan["gpu_step"]:
        print("no GPU: the BERT-Large GPU benchmark is skipped; RESULTS.md keeps its earlier GPU figures")
    failed = []
    for name, runs in plan.items():
        if args.only and name not in args.only:
            continue
        for command in runs:
            print(f"== {name}: {' '.join(command[1:])}", flush=True)
            start = time.monotonic()
            if subprocess.run(command, cwd=ROOT).returncode != 0:
                failed.append(name)
            print(f"   {time.monotonic() - start:.0f} s", flush=True)
    subprocess.run([sys.executable, str(BENCHMARKS / "report.py"), "--results", str(args.results)], check=True)
    if failed:
        print(f"failed: {', '.join(failed)}; their tables keep the earlier figures", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
