"""The preprocessing job as an Apache Beam pipeline: the engine around the pure modules.

    read ranges ─ReadAndTokenize─> (split, bucket) -> document ─GroupByKey─> MakeInstances
      ─> samples per bucket ─(counts side input)─> samples per shard ─GroupByKey─> WriteShard
      ─> shard records + counters ─> manifest.json

Every decision that affects the output (split, bucket, random streams, order, shard placement) is
derived from the seed and the documents' names, never from bundles, workers or timing, so any
runner and any number of workers writes the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from preprocessing import documents as docs
from preprocessing.instances import SpecialIds, bucket_instances
from preprocessing.manifest import MANIFEST_NAME, build_manifest, manifest_bytes
from preprocessing.pairing import Document, PairingParams
from preprocessing.randomness import stable_hash, unit_interval
from preprocessing.sentences import SentenceSplitter
from preprocessing.shards import (
    POSITION_DTYPE,
    place,
    sample_key,
    shard_count,
    shard_name,
    tar_bytes,
    token_dtype,
)

logger = logging.getLogger(__name__)

METRICS_NAMESPACE = "bertpipe.preprocess"
FORMATS = ("text", "jsonl", "parquet")
# Byte ranges of uncompressed inputs: small enough to spread a 50 MB corpus over many workers,
# large enough that a terabyte corpus does not make millions of work items.
MIN_RANGE_BYTES = 1 << 20
MAX_RANGE_BYTES = 64 << 20
TOKENIZE_BATCH_SENTENCES = 2048


@dataclass(frozen=True)
class JobParams:
    """Everything that decides the output bytes; recorded in the manifest as `parameters`."""

    input_format: str = "text"
    text_field: str = "text"
    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    dupe_factor: int = 5
    whole_word_mask: bool = False
    validation_fraction: float = 0.01
    seed: int = 12345
    bucket_mb: float = 8.0
    shard_mb: float = 64.0
    sentence_splitter: str = field(default_factory=lambda: SentenceSplitter.description())

    def __post_init__(self) -> None:
        if self.input_format not in FORMATS:
            raise ValueError(f"input format {self.input_format!r} is not one of {list(FORMATS)}")
        if self.dupe_factor < 1:
            raise ValueError(f"dupe_factor must be at least 1, got {self.dupe_factor}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.max_predictions_per_seq > self.max_seq_length - 3:
            raise ValueError(
                f"max_predictions_per_seq={self.max_predictions_per_seq} exceeds the maskable tokens of a "
                f"sequence (max_seq_length - 3 = {self.max_seq_length - 3})"
            )
        if self.max_seq_length > np.iinfo(POSITION_DTYPE).max:
            raise ValueError(f"max_seq_length must be at most {np.iinfo(POSITION_DTYPE).max}")
        if self.bucket_mb <= 0 or self.shard_mb <= 0:
            raise ValueError("bucket_mb and shard_mb must be positive")
        PairingParams(self.max_seq_length, self.short_seq_prob)  # validates those two

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReadTask:
    path: str
    start: int
    end: int
    compressed: bool
    row_group: int = -1  # Parquet: one task per row group


@dataclass(frozen=True)
class BucketPlan:
    """How many buckets each split has: fixed by the input size, so documents land in the same
    bucket whatever the workers."""

    train: int
    validation: int

    def count(self, split: str) -> int:
        return self.train if split == "train" else self.validation


def is_compressed(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


def range_size(total_bytes: int) -> int:
    return int(min(MAX_RANGE_BYTES, max(MIN_RANGE_BYTES, total_bytes // 64)))


def plan_reads(files: list[tuple[str, int]], input_format: str) -> list[ReadTask]:
    """Work items: byte ranges of uncompressed text and JSON Lines, whole compressed files,
    Parquet row groups."""
    total = sum(size for _, size in files)
    step = range_size(total)
    tasks: list[ReadTask] = []
    for path, size in files:
        if input_format == "parquet":
            import pyarrow.parquet as pq

            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                groups = pq.ParquetFile(handle).num_row_groups
            tasks.extend(ReadTask(path, 0, size, False, row_group=g) for g in range(groups))
        elif is_compressed(path):
            tasks.append(ReadTask(path, 0, size, True))
        else:
            tasks.extend(
                ReadTask(path, start, min(size, start + step), False) for start in range(0, size, step)
            )
    return tasks


def plan_buckets(total_bytes: int, params: JobParams) -> BucketPlan:
    bucket_bytes = params.bucket_mb * 2**20
    validation_bytes = total_bytes * params.validation_fraction
    return BucketPlan(
        train=max(1, math.ceil((total_bytes - validation_bytes) / bucket_bytes)),
        validation=max(1, math.ceil(validation_bytes / bucket_bytes)),
    )


def assign(document_key: str, params: JobParams, plan: BucketPlan) -> tuple[str, int]:
    """(split, bucket) of a document, from the seed and its name alone."""
    split = (
        "validation"
        if unit_interval(params.seed, "split", document_key) < params.validation_fraction
        else "train"
    )
    return split, stable_hash(params.seed, "bucket", document_key) % plan.count(split)


def encode_document(document: Document) -> tuple[bytes, bytes]:
    return document.tokens.astype("<i4").tobytes(), document.offsets.astype("<i8").tobytes()


def decode_document(tokens: bytes, offsets: bytes) -> Document:
    return Document(tokens=np.frombuffer(tokens, dtype="<i4"), offsets=np.frombuffer(offsets, dtype="<i8"))


def sum_counters(counters: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return dict(total)


class _Counted(beam.DoFn):
    """Mirrors the counters it emits as data into Beam metrics, for the runner's monitoring UI."""

    def count(self, counters: dict[str, int]) -> beam.pvalue.TaggedOutput:
        for name, value in counters.items():
            Metrics.counter(METRICS_NAMESPACE, name).inc(value)
        return beam.pvalue.TaggedOutput("counters", counters)


class ReadAndTokenize(_Counted):
    """A read task -> ((split, bucket), (document key, token bytes, sentence offset bytes))."""

    def __init__(self, params: JobParams, plan: BucketPlan, tokenizer_json: str):
        self.params, self.plan, self.tokenizer_json = params, plan, tokenizer_json

    def setup(self) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one worker, one core
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(self.tokenizer_json)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.splitter = SentenceSplitter(max_sentence_chars=self.params.max_seq_length * 40)

    def process(self, task: ReadTask) -> Iterator[Any]:
        read_stats = docs.ReadStats()
        counters: Counter[str] = Counter()
        pending: list[tuple[str, list[str]]] = []
        pending_sentences = 0
        for raw in self.read(task, read_stats):
            sentences = [s for paragraph in raw.paragraphs for s in self.splitter.split(paragraph, counters)]
            pending.append((raw.key, sentences))
            pending_sentences += len(sentences)
            if pending_sentences >= TOKENIZE_BATCH_SENTENCES:
                yield from self.tokenize(pending, counters)
                pending, pending_sentences = [], 0
        yield from self.tokenize(pending, counters)
        counters.update(read_stats.as_dict())
        yield self.count(dict(counters))

    def read(self, task: ReadTask, stats: docs.ReadStats) -> Iterator[docs.RawDocument]:
        fmt = self.params.input_format
        if fmt == "parquet":
            yield from _parquet_documents(task, self.params.text_field, stats)
            return
        compression = CompressionTypes.AUTO if task.compressed else CompressionTypes.UNCOMPRESSED
        with FileSystems.open(task.path, compression_type=compression) as stream:
            end = math.inf if task.compressed else task.end
            if fmt == "text":
                yield from docs.text_documents(stream, task.path, task.start, end, stats)
            else:
                yield from docs.jsonl_documents(
                    stream, task.path, task.start, end, self.params.text_field, stats
                )

    def tokenize(self, pending: list[tuple[str, list[str]]], counters: Counter[str]) -> Iterator[Any]:
        flat = [s for _, sentences in pending for s in sentences]
        encodings = self.tokenizer.encode_batch_fast(flat, add_special_tokens=False) if flat else []
        cursor = 0
        for key, sentences in pending:
            ids = [encodings[cursor + i].ids for i in range(len(sentences))]
            cursor += len(sentences)
            document = Document.from_sentences(ids)
            if document.num_sentences == 0:
                counters["empty_documents"] += 1
                continue
            counters["sentences"] += document.num_sentences
            counters["input_tokens"] += len(document.tokens)
            counters["single_sentence_documents"] += document.num_sentences == 1
            yield assign(key, self.params, self.plan), (key, *encode_document(document))


def _parquet_documents(task: ReadTask, column: str, stats: docs.ReadStats) -> Iterator[docs.RawDocument]:
    import pyarrow.parquet as pq

    with FileSystems.open(task.path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        parquet = pq.ParquetFile(handle)
        if column not in parquet.schema_arrow.names:
            raise ValueError(
                f"{task.path} has no column {column!r} (columns: {parquet.schema_arrow.names}); "
                f"choose one with --text-field"
            )
        table = parquet.read_row_group(task.row_group, columns=[column])
        for row, text in enumerate(table.column(column).to_pylist()):
            key = f"{task.path}@{task.row_group}:{row}"
            if not isinstance(text, str):
                stats.malformed_records += 1
                continue
            yield from docs.text_record(text, key, stats)


class MakeInstances(_Counted):
    """(split, bucket), documents -> ((split, bucket), encoded samples in their seeded order)."""

    def __init__(self, params: JobParams, tokenizer_json: str):
        self.params, self.tokenizer_json = params, tokenizer_json

    def setup(self) -> None:
        from tokenizers import Tokenizer

        from preprocessing.tokenizer import masking_rule, tokenizer_info

        tokenizer = Tokenizer.from_str(self.tokenizer_json)
        info = tokenizer_info(tokenizer)
        self.rule = masking_rule(
            tokenizer,
            self.params.masked_lm_prob,
            self.params.max_predictions_per_seq,
            self.params.whole_word_mask,
        )
        self.special = SpecialIds(cls=info.special_token_ids["[CLS]"], sep=info.special_token_ids["[SEP]"])
        self.dtype = token_dtype(info.vocab_size)
        self.pairing = PairingParams(self.params.max_seq_length, self.params.short_seq_prob)

    def process(self, element: tuple[tuple[str, int], Iterable[tuple[str, bytes, bytes]]]) -> Iterator[Any]:
        (split, bucket), members = element
        ordered = sorted(members, key=lambda member: member[0])  # arrival order is the runner's, not ours
        documents = [decode_document(tokens, offsets) for _, tokens, offsets in ordered]
        samples, stats = bucket_instances(
            documents,
            (self.params.seed, split, bucket),
            self.pairing,
            self.params.dupe_factor,
            self.rule,
            self.special,
            self.dtype,
        )
        yield (split, bucket), samples
        yield self.count(stats.as_dict())


def bucket_sizes(element: tuple[tuple[str, int], list[bytes]]) -> tuple[tuple[str, int], tuple[int, int]]:
    key, samples = element
    return key, (len(samples), sum(len(s) for s in samples))


@dataclass(frozen=True)
class SplitLayout:
    """Where each bucket's samples start in its split's global order, and the split's shard count."""

    first_index: dict[tuple[str, int], int]
    num_shards: dict[str, int]


def layout(sizes: dict[tuple[str, int], tuple[int, int]], shard_mb: float) -> SplitLayout:
    first_index: dict[tuple[str, int], int] = {}
    num_shards: dict[str, int] = {}
    for split in ("train", "validation"):
        keys = sorted(k for k in sizes if k[0] == split)
        running = 0
        for key in keys:
            first_index[key] = running
            running += sizes[key][0]
        total_bytes = sum(sizes[k][1] for k in keys)
        num_shards[split] = shard_count(running, total_bytes, int(shard_mb * 2**20))
    return SplitLayout(first_index, num_shards)


def deal_to_shards(element: tuple[tuple[str, int], list[bytes]], plan: SplitLayout) -> Iterator[Any]:
    """One element per (bucket, shard): that bucket's samples for that shard with their positions."""
    (split, bucket), samples = element
    shards = plan.num_shards[split]
    first = plan.first_index[(split, bucket)]
    parts: dict[int, list[tuple[int, str, bytes]]] = {}
    for offset, sample in enumerate(samples):
        shard, position = place(first + offset, shards)
        parts.setdefault(shard, []).append((position, sample_key(split, first + offset), sample))
    for shard, members in parts.items():
        yield (split, shard), members


class WriteShard(beam.DoFn):
    """All parts of one shard -> the tar file, written under a temporary name and renamed."""

    def __init__(self, output_dir: str, dtype: str):
        self.output_dir, self.dtype = output_dir, dtype

    def process(
        self, element: tuple[tuple[str, int], Iterable[list[tuple[int, str, bytes]]]]
    ) -> Iterator[dict]:
        (split, index), parts = element
        members = sorted((m for part in parts for m in part), key=lambda m: m[0])
        data = tar_bytes((key, sample) for _, key, sample in members)
        name = shard_name(split, index)
        write_atomically(FileSystems.join(self.output_dir, name), data)
        tokens, masked = shard_token_counts((sample for _, _, sample in members), np.dtype(self.dtype))
        Metrics.counter(METRICS_NAMESPACE, "shards_written").inc()
        yield {
            "split": split,
            "index": index,
            "name": name,
            "samples": len(members),
            "tokens": tokens,
            "masked_tokens": masked,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }


def shard_token_counts(samples: Iterable[bytes], dtype: np.dtype) -> tuple[int, int]:
    from preprocessing.shards import decode_sample

    tokens = masked = 0
    for data in samples:
        sample = decode_sample(data, dtype)
        tokens += len(sample.input_ids)
        masked += len(sample.masked_lm_positions)
    return tokens, masked


def write_atomically(path: str, data: bytes) -> None:
    """Temporary name unique to this attempt, then rename: a retried bundle rewrites the same bytes."""
    directory, name = path.rsplit("/", 1) if "/" in path else ("", path)
    temporary = (
        FileSystems.join(directory, f".{name}.{uuid.uuid4().hex}.tmp") if directory else f".{name}.tmp"
    )
    with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(data)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])


class WriteManifest(beam.DoFn):
    def __init__(self, output_dir: str, recipe: dict[str, Any]):
        self.output_dir, self.recipe = output_dir, recipe

    def process(self, records: list[dict], counters: dict[str, int]) -> Iterator[str]:
        manifest = build_manifest(shard_records=records, counters=counters, **self.recipe)
        path = FileSystems.join(self.output_dir, MANIFEST_NAME)
        write_atomically(path, manifest_bytes(manifest))
        yield path


def build_pipeline(
    pipeline: beam.Pipeline,
    tasks: list[ReadTask],
    params: JobParams,
    plan: BucketPlan,
    tokenizer_json: str,
    output_dir: str,
    recipe: dict[str, Any],
) -> None:
    read = (
        pipeline
        | "ReadTasks" >> beam.Create(tasks)
        | "SpreadTasks" >> beam.Reshuffle()
        | "ReadAndTokenize"
        >> beam.ParDo(ReadAndTokenize(params, plan, tokenizer_json)).with_outputs(
            "counters", main="documents"
        )
    )
    instances = (
        read.documents
        | "GroupBuckets" >> beam.GroupByKey()
        | "MakeInstances"
        >> beam.ParDo(MakeInstances(params, tokenizer_json)).with_outputs("counters", main="samples")
    )
    sizes = (
        instances.samples
        | "BucketSizes" >> beam.Map(bucket_sizes)
        | "AllSizes" >> beam.combiners.ToDict()
        | "Layout" >> beam.Map(layout, shard_mb=params.shard_mb)
    )
    records = (
        instances.samples
        | "DealToShards" >> beam.FlatMap(deal_to_shards, plan=beam.pvalue.AsSingleton(sizes))
        | "GroupShards" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShard(output_dir, recipe["token_dtype"]))
        | "AllRecords" >> beam.combiners.ToList()
    )
    counters = (
        (read.counters, instances.counters)
        | "AllCounters" >> beam.Flatten()
        | "SumCounters" >> beam.CombineGlobally(sum_counters)
    )
    _ = records | "WriteManifest" >> beam.ParDo(
        WriteManifest(output_dir, recipe), counters=beam.pvalue.AsSingleton(counters)
    )


def run_pipeline(
    tasks: list[ReadTask],
    params: JobParams,
    plan: BucketPlan,
    tokenizer_json: str,
    output_dir: str,
    recipe: dict[str, Any],
    beam_args: list[str],
) -> dict[str, int]:
    """Run to completion; return the Beam metric counters the runner reports."""
    options = PipelineOptions(beam_args)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, tasks, params, plan, tokenizer_json, output_dir, recipe)
    result = pipeline.run()
    result.wait_until_finish()
    metrics: dict[str, int] = {}
    try:
        for counter in result.metrics().query()["counters"]:
            if counter.key.metric.namespace == METRICS_NAMESPACE:
                metrics[counter.key.metric.name] = metrics.get(counter.key.metric.name, 0) + counter.committed
    except (NotImplementedError, KeyError, AttributeError):  # a runner without metric queries
        logger.warning("this runner does not report Beam metrics; counters are in the manifest")
    return metrics
