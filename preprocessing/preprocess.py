"""The preprocessing job's driver: checks inputs and the output directory, runs the Beam pipeline,
prints the summary. Everything here happens before or after the pipeline, on the launching machine."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from preprocessing import beam_job
from preprocessing import storage as fs
from preprocessing.beam_job import WORK_DIR, JobParams, PreprocessError
from preprocessing.documents import SNIFF_BYTES, binary_content
from preprocessing.manifest import MANIFEST_NAME, SPLITS, Manifest, recipe_differences
from preprocessing.planning import plan_buckets
from preprocessing.shards import POSITION_DTYPE, token_dtype
from preprocessing.tokenizer import (
    TOKENIZER_CONFIG,
    TOKENIZER_JSON,
    VOCAB_TXT,
    load_tokenizer,
    tokenizer_files,
    tokenizer_info,
)

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    manifest: Manifest
    skipped: bool  # the directory already held this dataset
    beam_counters: dict[str, int]


def default_beam_args() -> list[str]:
    """Beam's local runner with one worker process per core. FnApiRunner is the engine the
    DirectRunner uses for batch jobs; named directly, it skips the DirectRunner's first attempt
    to download and start the Prism runner binary, which fails without network access."""
    workers = max(1, min(os.cpu_count() or 1, 8))
    return [
        "--runner=FnApiRunner",
        "--direct_running_mode=multi_processing",
        f"--direct_num_workers={workers}",
        "--default_sdk_harness_log_level=WARNING",
    ]


def guess_format(paths: list[str]) -> str:
    names = [p.lower().removesuffix(".gz").removesuffix(".bz2").removesuffix(".xz") for p in paths]
    if all(n.endswith(".parquet") for n in names):
        return "parquet"
    if all(n.endswith((".jsonl", ".json", ".ndjson")) for n in names):
        return "jsonl"
    return "text"


def match_inputs(patterns: list[str]) -> list[tuple[str, int]]:
    """(path, size) of every file the globs match, sorted; an error for globs that match nothing."""
    if not patterns:
        raise PreprocessError("no --input given; pass one or more file globs")
    files: dict[str, int] = {}
    for pattern, matched in zip(patterns, fs.match(patterns), strict=True):
        if not matched:
            raise PreprocessError(f"--input {pattern!r} matches no file; check the path or quote the glob")
        files.update(matched)
    if not any(files.values()):
        raise PreprocessError(f"every input file is empty: {sorted(files)}")
    return sorted(files.items())


def check_text_inputs(paths: list[str]) -> None:
    """Every text or JSON Lines input must start as UTF-8 text (after decompression): a renamed archive or
    library would otherwise become training data."""
    problems = []
    for path in paths:
        with fs.open_input(path) as stream:
            problem = binary_content(stream.read(SNIFF_BYTES))
        if problem:
            problems.append(f"{path} {problem}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise PreprocessError(f"not every input is text: {shown}")


OWN_FILES = (MANIFEST_NAME, TOKENIZER_JSON, VOCAB_TXT, TOKENIZER_CONFIG)


def is_own_file(name: str) -> bool:
    """Files this job writes: the manifest, tokenizer files, shards and their temporary names."""
    if name in OWN_FILES:
        return True
    return name.lstrip(".").startswith(SPLITS) and name.endswith((".tar", ".tmp"))


def prepare_output(output_dir: str, recipe: dict[str, Any], overwrite: bool) -> Manifest | None:
    """Return the existing manifest when the directory already holds this dataset; otherwise make the
    directory ready, refusing to touch anything that is not an unfinished dataset of this job."""
    manifest_path = fs.join(output_dir, MANIFEST_NAME)
    names = fs.list_names(output_dir)
    if fs.exists(manifest_path):
        existing = fs.read_json(manifest_path)
        differences = recipe_differences(existing, recipe["parameters"], recipe["inputs"], recipe["tokenizer"])
        shards = {s["name"] for split in existing["splits"].values() for s in split["shards"]}
        if not differences and shards <= set(names):
            return Manifest.from_dict(existing, source=manifest_path)
        if differences and not overwrite:
            raise PreprocessError(
                f"{output_dir} holds a dataset made with a different recipe ({'; '.join(differences)}); "
                f"pass --overwrite to replace it or choose another --output"
            )
    foreign = [n for n in names if not is_own_file(n)]
    if foreign and not overwrite:
        raise PreprocessError(
            f"{output_dir} is not empty and does not hold a dataset of this job (found {foreign[:5]}); "
            f"choose an empty --output or pass --overwrite"
        )
    # An unfinished or replaced dataset: its shards may be stale. Files of other origin stay.
    fs.delete([fs.join(output_dir, n) for n in names if is_own_file(n)] + [fs.join(output_dir, WORK_DIR)])
    fs.make_dirs(output_dir)
    return None


def run(
    inputs: list[str],
    tokenizer_dir: str,
    output_dir: str,
    params: JobParams,
    beam_args: list[str] | None = None,
    overwrite: bool = False,
    shuffle_documents: bool | None = None,
) -> Outcome:
    """Check everything that can be checked, then run the job; bad input fails before any output. Local
    paths are made absolute: a worker may run in another folder."""
    output_dir, tokenizer_dir = fs.absolute(output_dir), fs.absolute(tokenizer_dir)
    files = match_inputs(inputs)
    if params.input_format != "parquet":
        check_text_inputs([path for path, size in files if size])
    tasks = beam_job.plan_reads(files, params.input_format, params.text_field)
    tokenizer = load_tokenizer(tokenizer_dir)
    info = tokenizer_info(tokenizer)
    recipe = {
        "parameters": params.to_dict(),
        "inputs": [{"path": path, "bytes": size} for path, size in files],
        "tokenizer": info.to_dict(),
        "token_dtype": token_dtype(info.vocab_size).name,
        "position_dtype": np.dtype(POSITION_DTYPE).name,
    }
    existing = prepare_output(output_dir, recipe, overwrite)
    if existing is not None:
        logger.info("%s already holds this dataset (same inputs, parameters and tokenizer): nothing to do", output_dir)
        return Outcome(manifest=existing, skipped=True, beam_counters={})

    for name, data in tokenizer_files(tokenizer).items():  # beside the shards, for the trainer
        fs.write_atomically(fs.join(output_dir, name), data)
    plan = plan_buckets(sum(size for _, size in files), params.bucket_mb, params.validation_fraction)
    logger.info(
        "%d input files, %d read tasks, %d + %d buckets -> %s",
        len(files),
        len(tasks),
        plan.train,
        plan.validation,
        output_dir,
    )
    job = beam_job.Job(tasks, params, plan, tokenizer.to_str(), output_dir, recipe)
    counters = beam_job.run_pipeline(job, beam_args or default_beam_args(), shuffle_documents)
    manifest_path = fs.join(output_dir, MANIFEST_NAME)
    manifest = Manifest.from_dict(fs.read_json(manifest_path), source=manifest_path)
    return Outcome(manifest=manifest, skipped=False, beam_counters=counters)


def summary(outcome: Outcome, output_dir: str) -> str:
    """The end-of-job report: splits, counters, and the runner's metrics when they disagree."""
    manifest = outcome.manifest
    if outcome.skipped:
        samples = manifest.totals["samples"]
        return f"{output_dir} already holds this dataset ({samples:,} samples); nothing to do"
    lines = [f"dataset -> {output_dir}"]
    for split, info in manifest.splits.items():
        shards = len(info.shards)
        line = f"  {split:10s} {info.samples:>10,} samples {info.tokens:>13,} tokens in {shards} shards"
        if info.mean_length is not None and info.padding_share is not None:  # None: no samples, or an older manifest
            padding = f"{info.padding_share:.1%} padding"
            line += f", mean length {info.mean_length:.1f} of {manifest.max_seq_length} ({padding})"
        lines.append(line)
    counters = manifest.counters
    lines.append("  counters: " + ", ".join(f"{k}={v:,}" for k, v in counters.items()))
    instances = counters.get("instances", 0)
    if instances:
        lines.append(f"  random-next share: {counters.get('random_next', 0) / instances:.3f}")
    mismatched = {k: v for k, v in outcome.beam_counters.items() if k in counters and counters[k] != v}
    if mismatched:
        lines.append(f"  note: the runner's metrics differ (retried bundles count twice there): {mismatched}")
    return "\n".join(lines)
