"""Packed against padded training steps on real shards of the bundled corpus, at seq 128 and 512, in one process.

For each sequence length the real preprocessing job builds a dataset from the shipped corpus (dupe factor 1,
max_predictions 0.15 x seq, as BERT's phases use), then one training stream (`pipeline.data.loader.stream_batches`)
yields the same micro-batches of instances twice: padded to the longest instance (one row each) and packed
(`pipeline.data.packing`, several instances per row). Reported per length: the padding share of each form over
`--batches` batches, rows per batch, and the time of a full training step (forward, backward, AdamW) of our
`BertForPreTraining` on each form, the two interleaved over `--repeat` rounds (the fastest round counts), as
real tokens per second. The ideal speed-up is what the computed tokens shrink by, (1 - packed share) /
(1 - padded share); the goal is a measured speed-up within 10% of it. Both forms are checked to give the same
loss on the first batch (no dropout) before anything is timed. Writes JSON.

    python benchmarks/packing.py --out benchmarks/results/packing.json
    python benchmarks/packing.py --device cuda --preset large --dtype bf16 --batch 64   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.loader import build_dataset
from benchmarks.machine import cpu_description
from model import BertConfig, BertForPreTraining
from pipeline.data.dataset_check import load_manifest
from pipeline.data.loader import SplitSpec, StreamOptions, stream_batches

IDEAL_TOLERANCE = 0.10  # the goal: a measured speed-up within 10% of the ideal one


def batches_of(dataset: Path, batch: int, count: int, packing: bool) -> list[dict[str, torch.Tensor]]:
    spec = SplitSpec.from_manifest(dataset, load_manifest(dataset), "train")
    options = StreamOptions(micro_batch=batch, seed=5, packing=packing)
    return [
        {k: v for k, v in b.items() if isinstance(v, torch.Tensor)}
        for b in islice(stream_batches(spec, options, 1, 0, 0), count)
    ]


def padding_share(batches: list[dict[str, torch.Tensor]]) -> float:
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return 1.0 - real / sum(b["input_ids"].numel() for b in batches)


def step_seconds(model: BertForPreTraining, optimizer, batch: dict[str, torch.Tensor], args) -> float:
    device = torch.device(args.device)
    moved = {k: v.to(device) for k, v in batch.items()}
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
        loss = model(**moved).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure_length(seq: int, work: Path, args) -> dict[str, Any]:
    dataset = build_dataset(
        work / f"seq{seq}", 1, 4, args.vocab_size, max_seq_length=seq, max_predictions_per_seq=round(0.15 * seq)
    )
    forms = {name: batches_of(dataset, args.batch, args.batches, name == "packed") for name in ("padded", "packed")}
    shares = {name: padding_share(batches) for name, batches in forms.items()}
    manifest = load_manifest(dataset)
    overrides = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    config = BertConfig.from_preset(args.preset, vocab_size=manifest.tokenizer.vocab_size, **overrides)
    torch.manual_seed(0)
    model = BertForPreTraining(config).to(args.device)
    with torch.no_grad():
        losses = {
            name: float(model(**{k: v.to(args.device) for k, v in forms[name][0].items()}).loss) for name in forms
        }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=args.device == "cuda")
    timed = forms["padded"][: args.timed], forms["packed"][: args.timed]
    for batch in (timed[0][0], timed[1][0]):  # warm up both shapes
        step_seconds(model, optimizer, batch, args)
    rounds: dict[str, list[float]] = {"padded": [], "packed": []}
    for _ in range(args.repeat):
        for name, batches in zip(("padded", "packed"), timed, strict=True):
            rounds[name].append(sum(step_seconds(model, optimizer, b, args) for b in batches))
    real_tokens = sum(int(b["attention_mask"].sum()) for b in timed[0])
    result: dict[str, Any] = {
        "max_seq_length": seq,
        "train_samples": manifest.splits["train"].samples,
        "padding_share": shares,
        "rows_per_batch": {
            name: sum(b["input_ids"].shape[0] for b in forms[name]) / len(forms[name]) for name in forms
        },
        "first_batch_loss": losses,
        "timed_batches": len(timed[0]),
        "real_tokens_per_s": {name: real_tokens / min(seconds) for name, seconds in rounds.items()},
        "round_s": rounds,
    }
    result["speedup"] = result["real_tokens_per_s"]["packed"] / result["real_tokens_per_s"]["padded"]
    result["ideal_speedup"] = (1 - shares["packed"]) / (1 - shares["padded"])
    result["share_of_ideal"] = result["speedup"] / result["ideal_speedup"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--batch", type=int, default=32, help="instances per micro-batch")
    parser.add_argument("--batches", type=int, default=50, help="batches the padding shares are measured over")
    parser.add_argument("--timed", type=int, default=3, help="batches per timed round")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--out", type=Path, default=Path("packing.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        results = [measure_length(seq, Path(work), args) for seq in args.lengths]
    machine = torch.cuda.get_device_name() if args.device == "cuda" else cpu_description()
    report = {
        "benchmark": "packing",
        "machine": machine,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "preset": args.preset,
        "batch": args.batch,
        "dtype": args.dtype,
        "repeat": args.repeat,
        "results": results,
        "goal": f"speed-up within {IDEAL_TOLERANCE:.0%} of the ideal",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for r in results:
        share = r["padding_share"]
        print(
            f"seq {r['max_seq_length']}: padding {share['padded']:.3f} -> {share['packed']:.3f}, "
            f"speed-up {r['speedup']:.2f}x of ideal {r['ideal_speedup']:.2f}x"
        )


if __name__ == "__main__":
    main()
