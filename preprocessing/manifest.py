"""`manifest.json`: what a dataset directory holds and how it was made.

Written last, so its presence marks a finished dataset; it holds no timestamps or host names, so
the same inputs, parameters and seed give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from preprocessing.errors import BertpipeError
from preprocessing.lengths import BIN_WIDTH, LengthHistogram, mean_length, padding_share, sum_counts

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
SPLITS = ("train", "validation")
# Split fields a manifest may lack (written before they existed; the means of a split without samples): left
# out of the JSON when None, so that an older manifest reads back to the dict it was read from and keeps the
# digest its checkpoints recorded (a resume checks it).
OPTIONAL_SPLIT_FIELDS = ("length_histogram", "mean_length", "padding_share")


class ManifestError(BertpipeError, ValueError):
    """A manifest this version cannot read; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class ShardInfo:
    name: str  # the tar file's name inside the dataset directory
    samples: int
    tokens: int
    masked_tokens: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SplitInfo:
    samples: int
    tokens: int
    masked_tokens: int
    shards: tuple[ShardInfo, ...]
    length_histogram: LengthHistogram | None = None
    mean_length: float | None = None  # tokens per instance, [CLS] and [SEP] included
    padding_share: float | None = None  # of a batch padded to max_seq_length: 1 - mean_length / max_seq_length

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SplitInfo:
        histogram = values.get("length_histogram")
        mean, padding = values.get("mean_length"), values.get("padding_share")
        return cls(
            samples=int(values["samples"]),
            tokens=int(values["tokens"]),
            masked_tokens=int(values["masked_tokens"]),
            shards=tuple(ShardInfo(**shard) for shard in values["shards"]),
            length_histogram=None if histogram is None else LengthHistogram.from_dict(histogram),
            mean_length=None if mean is None else float(mean),
            padding_share=None if padding is None else float(padding),
        )


@dataclass(frozen=True)
class TokenizerInfo:
    """What the manifest records about the tokenizer and the trainer checks against the model."""

    vocab_size: int
    vocab_sha256: str | None
    special_token_ids: Mapping[str, int]
    lowercase: bool | None  # None: the tokenizer does not say

    @property
    def pad_id(self) -> int:
        return int(self.special_token_ids["[PAD]"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size,
            "vocab_sha256": self.vocab_sha256,
            "special_token_ids": dict(self.special_token_ids),
            "lowercase": self.lowercase,
        }


@dataclass(frozen=True)
class Manifest:
    """A finished dataset's `manifest.json`, typed. `parameters`, `inputs` and `counters` stay the open
    records preprocessing writes (their keys grow with the job's options)."""

    format_version: int
    parameters: Mapping[str, Any]
    inputs: tuple[Mapping[str, Any], ...]
    tokenizer: TokenizerInfo
    token_dtype: str
    position_dtype: str
    splits: Mapping[str, SplitInfo]
    counters: Mapping[str, int]
    totals: Mapping[str, int]

    @property
    def max_seq_length(self) -> int:
        return int(self.parameters["max_seq_length"])

    @property
    def max_predictions(self) -> int:
        return int(self.parameters["max_predictions_per_seq"])

    @property
    def sha256(self) -> str:
        """Of the manifest's content, whatever its formatting: what a checkpoint records of its dataset."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as `manifest.json` holds it (tuples become lists)."""
        values = json.loads(json.dumps(asdict(self)))
        values["splits"] = {name: without_none(split) for name, split in values["splits"].items()}
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = MANIFEST_NAME) -> Manifest:
        """The manifest of `values`; an unknown format version or a missing field is a ManifestError
        naming `source`."""
        version = values.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"{source} has format_version {version!r}; this version of bertpipe reads {FORMAT_VERSION}: "
                f"preprocess the corpus again with this version, or train with the version that wrote it"
            )
        try:
            tokenizer = values["tokenizer"]
            return cls(
                format_version=version,
                parameters=dict(values["parameters"]),
                inputs=tuple(values["inputs"]),
                tokenizer=TokenizerInfo(
                    vocab_size=int(tokenizer["vocab_size"]),
                    vocab_sha256=tokenizer.get("vocab_sha256"),
                    special_token_ids=dict(tokenizer["special_token_ids"]),
                    lowercase=tokenizer["lowercase"],
                ),
                token_dtype=values["token_dtype"],
                position_dtype=values["position_dtype"],
                splits={name: SplitInfo.from_dict(split) for name, split in values["splits"].items()},
                counters=dict(values["counters"]),
                totals=dict(values["totals"]),
            )
        except (KeyError, TypeError) as error:
            raise ManifestError(
                f"{source} lacks a field or has one of the wrong shape ({error!r}): it was not written by "
                f"`bertpipe preprocess` or was edited; preprocess again"
            ) from error


def without_none(split: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in split.items() if not (k in OPTIONAL_SPLIT_FIELDS and v is None)}


def split_record(shard_records: list[dict[str, Any]], max_seq_length: int) -> dict[str, Any]:
    """A split's manifest entry from its shards' records: their counts summed, their length histograms
    summed into one for the split (a histogram per shard would grow the manifest with the shard count)."""
    samples = sum(r["samples"] for r in shard_records)
    tokens = sum(r["tokens"] for r in shard_records)
    mean = mean_length(tokens, samples)
    counts = sum_counts(r["length_counts"] for r in shard_records)
    return without_none(
        {
            "samples": samples,
            "tokens": tokens,
            "masked_tokens": sum(r["masked_tokens"] for r in shard_records),
            "shards": [
                {k: v for k, v in r.items() if k not in ("split", "index", "length_counts")} for r in shard_records
            ],
            "length_histogram": {"bin_width": BIN_WIDTH, "counts": counts},
            "mean_length": mean,
            "padding_share": padding_share(mean, max_seq_length),
        }
    )


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
    splits = {
        split: split_record([r for r in records if r["split"] == split], int(parameters["max_seq_length"]))
        for split in SPLITS
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
