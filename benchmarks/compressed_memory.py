"""Peak memory of preprocessing one gzip-compressed file, at two sizes.

A compressed file cannot be split, so one read task reads all of it; the task hands its tokenized documents
on every `preprocessing.beam_job.FLUSH_BYTES` (64 MiB) instead of holding the whole file's, so its memory
should not grow with the file. Builds one `.txt.gz` of the shipped corpus (repeated) at each `--sizes-mb`
(uncompressed), runs `bertpipe preprocess` on it with one local worker, and samples the resident memory of
the whole process tree every 50 ms. Writes JSON.

    python benchmarks/compressed_memory.py --sizes-mb 100 1000 --out benchmarks/results/compressed_memory.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import cpu_description
from benchmarks.preprocess import SOURCE, run_job, train_tokenizer

GROWTH_GOAL = 0.20  # peak memory of the largest file at most 20% above the smallest's


def build_gzip_corpus(path: Path, megabytes: float) -> int:
    """One gzip file of copies of the shipped corpus, `megabytes` of text; returns the compressed size."""
    text = (SOURCE.read_text(encoding="utf-8").rstrip("\n") + "\n\n").encode("utf-8")
    copies = int(megabytes * 2**20 / len(text)) + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=6) as handle:
        for _ in range(copies):
            handle.write(text)
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[100.0, 1000.0], help="uncompressed text")
    parser.add_argument("--dupe-factor", type=int, default=1)
    parser.add_argument("--shard-mb", type=float, default=64.0)
    parser.add_argument("--out", type=Path, default=Path("compressed_memory.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bertpipe-gz-"))
    runs = []
    try:
        train_tokenizer(work / "tokenizer")
        for megabytes in args.sizes_mb:
            corpus = work / f"corpus-{megabytes:g}"
            compressed = build_gzip_corpus(corpus / "corpus.txt.gz", megabytes)
            run = run_job(corpus, work / "tokenizer", work / "out", 1, args, pattern="corpus.txt.gz")
            runs.append({**run, "text_mb": megabytes, "compressed_bytes": compressed})
            print(f"{megabytes:g} MB of text ({compressed / 2**20:.0f} MiB gzip): peak RSS "
                  f"{run['peak_rss_bytes'] / 2**20:.0f} MiB, {run['wall_s']:.0f} s", flush=True)  # fmt: skip
            shutil.rmtree(corpus)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    growth = runs[-1]["peak_rss_bytes"] / runs[0]["peak_rss_bytes"] - 1
    result = {
        "benchmark": "compressed_memory",
        "machine": cpu_description(),
        "dupe_factor": args.dupe_factor,
        "workers": 1,
        "runs": runs,
        "peak_rss_growth": growth,
        "goal": f"peak memory at {args.sizes_mb[-1]:g} MB at most {GROWTH_GOAL:.0%} above {args.sizes_mb[0]:g} MB",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"peak RSS growth {growth:+.1%} -> {args.out}")


if __name__ == "__main__":
    main()
