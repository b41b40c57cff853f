"""Shard planning at terabyte scale: `preprocessing.planning.plan_shards` against the definition it replaced
(every shard paired with every bucket file), in the same run, on one core. Writes JSON.

    python benchmarks/plan.py                    # 1 TB: 500k buckets of 2 MB of text into 250k shards

The definition is timed on a plan small enough for it to finish (`--reference-buckets`), ours on that plan and on
the terabyte one; the JSON gives both times, the speed-up on the shared plan, and the definition's time scaled
to the terabyte plan by its buckets x shards work.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import cpu_description
from preprocessing.planning import BucketFile, plan_shards
from preprocessing.shards import shard_bounds, shard_count

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_TAR_BYTES = 1_100  # a phase-1 sample as a tar member (header block and padded payload)


def synthetic_buckets(buckets: int, seed: int = 0) -> dict:
    """`buckets` train buckets of ~2 MB of text each: ~2,000 samples (the demo's ratio of samples to text)."""
    counts = np.random.default_rng(seed).integers(1_500, 2_500, size=buckets)
    return {("train", b): BucketFile(f"b{b}", int(n), int(n) * SAMPLE_TAR_BYTES) for b, n in enumerate(counts)}


def plan_by_definition(buckets: dict, shard_mb: float) -> int:
    """The replaced planner: each shard looks at every bucket file. Returns the pieces it finds."""
    files = [buckets[key] for key in sorted(buckets) if buckets[key].samples]
    total = sum(f.samples for f in files)
    count = shard_count(total, sum(f.tar_bytes for f in files), int(shard_mb * 2**20))
    starts = np.cumsum([0] + [f.samples for f in files])
    pieces = 0
    for first, stop in shard_bounds(total, count):
        for file, start in zip(files, starts[:-1], strict=True):
            if max(first, start) < min(stop, start + file.samples):
                pieces += 1
    return pieces


def timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--buckets", type=int, default=500_000, help="the terabyte plan's buckets")
    parser.add_argument("--reference-buckets", type=int, default=4_000, help="the shared plan's buckets")
    parser.add_argument("--shard-mb", type=float, default=2.1, help="about 2 buckets' samples per shard")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/plan.json")
    args = parser.parse_args()

    small = synthetic_buckets(args.reference_buckets)
    reference_s, reference_pieces = timed(plan_by_definition, small, args.shard_mb)
    ours_small_s, small_tasks = timed(plan_shards, small, args.shard_mb)
    assert reference_pieces == sum(len(t.pieces) for t in small_tasks)
    large = synthetic_buckets(args.buckets)
    ours_s, tasks = timed(plan_shards, large, args.shard_mb)
    samples = sum(f.samples for f in large.values())
    scale = (len(large) * len(tasks)) / (len(small) * len(small_tasks))
    result = {
        "machine": cpu_description(),
        "shard_mb": args.shard_mb,
        "shared_plan": {
            "buckets": len(small),
            "shards": len(small_tasks),
            "definition_s": round(reference_s, 3),
            "ours_s": round(ours_small_s, 4),
            "speedup": round(reference_s / ours_small_s, 1),
        },
        "terabyte_plan": {
            "buckets": len(large),
            "shards": len(tasks),
            "samples": samples,
            "text_tb": round(len(large) * 2 * 2**20 / 1e12, 2),
            "ours_s": round(ours_s, 2),
            "definition_s_scaled": round(reference_s * scale),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
