"""`manifest.json`: what a dataset directory holds and how it was made.

Written last, so its presence marks a finished dataset; it holds no timestamps or host names, so
the same inputs, parameters and seed give the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
SPLITS = ("train", "validation")


def build_manifest(
    parameters: dict[str, Any],
    inputs: list[dict[str, Any]],
    tokenizer: dict[str, Any],
    token_dtype: str,
    position_dtype: str,
    shard_records: Iterable[dict[str, Any]],
    counters: dict[str, int],
) -> dict[str, Any]:
    records = sorted(shard_records, key=lambda r: (SPLITS.index(r["split"]), r["index"]))
    splits: dict[str, Any] = {}
    for split in SPLITS:
        shards = [{k: v for k, v in r.items() if k not in ("split", "index")} for r in records if r["split"] == split]
        splits[split] = {
            "samples": sum(s["samples"] for s in shards),
            "tokens": sum(s["tokens"] for s in shards),
            "masked_tokens": sum(s["masked_tokens"] for s in shards),
            "shards": shards,
        }
    return {
        "format_version": FORMAT_VERSION,
        "parameters": parameters,
        "inputs": inputs,
        "tokenizer": tokenizer,
        "token_dtype": token_dtype,
        "position_dtype": position_dtype,
        "splits": splits,
        "counters": dict(sorted(counters.items())),
        "totals": {
            "samples": sum(s["samples"] for s in splits.values()),
            "tokens": sum(s["tokens"] for s in splits.values()),
            "shards": sum(len(s["shards"]) for s in splits.values()),
        },
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode("utf-8")


def recipe_differences(
    existing: dict[str, Any], parameters: dict[str, Any], inputs: list, tokenizer: dict
) -> list[str]:
    """What differs between an existing manifest and this run's recipe; empty when nothing does."""
    differences = []
    old_parameters = existing.get("parameters", {})
    for key in sorted(set(old_parameters) | set(parameters)):
        if old_parameters.get(key) != parameters.get(key):
            differences.append(f"{key}: {old_parameters.get(key)!r} -> {parameters.get(key)!r}")
    if existing.get("inputs") != inputs:
        differences.append("the input files or their sizes")
    if existing.get("tokenizer") != tokenizer:
        differences.append("the tokenizer")
    if existing.get("format_version") != FORMAT_VERSION:
        differences.append(f"format_version: {existing.get('format_version')!r} -> {FORMAT_VERSION}")
    return differences
