"""The preprocessing job as an Apache Beam pipeline: the engine around the pure modules.

    read tasks ─ReadAndTokenize─> document files, one per task, sorted by (split, bucket)
      ─GroupByKey(bucket)─> MakeInstances ─> sample files, one per bucket
      ─(all bucket sizes)─> shard plan ─WriteShard─> tar shards ─> manifest.json

Bulk data moves through files under `<output>/.work/`, and only their names and sizes move
through the runner: the local runner keeps every shuffled element in memory, so this keeps memory
bounded by a task, a bucket and a shard whatever the corpus size. Every decision that affects the
output (split, bucket, random streams, order, shard bounds) derives from the seed and the
documents' names, never from bundles, workers or timing: any runner and any number of workers
writes the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import apache_beam as beam
import msgpack
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from preprocessing import documents as docs
from preprocessing import storage as fs
from preprocessing.errors import BertpipeError
from preprocessing.instances import SpecialIds, bucket_instances
from preprocessing.lengths import length_counts, sum_counts
from preprocessing.manifest import MANIFEST_NAME, build_manifest, manifest_bytes
from preprocessing.pairing import Document, PairingParams
from preprocessing.planning import Bucket, BucketFile, BucketPlan, ShardTask, assign, plan_shards
from preprocessing.sentences import SentenceSplitter
from preprocessing.shards import (
    POSITION_DTYPE,
    sample_key,
    shard_name,
    tar_bytes,
    tar_member_bytes,
)

logger = logging.getLogger(__name__)

METRICS_NAMESPACE = "bertpipe.preprocess"
WORK_DIR = ".work"
FORMATS = ("text", "jsonl", "parquet")

# Byte ranges of uncompressed inputs: small enough to spread a 50 MB corpus over many workers,
# large enough that a terabyte corpus does not make millions of work items.
MIN_RANGE_BYTES = 1 << 20
MAX_RANGE_BYTES = 64 << 20
TOKENIZE_BATCH_SENTENCES = 4096
# Tokenized documents a read task holds before it hands them on: a task's memory stays bounded whatever its
# file's size (a compressed file is one task, however large).
FLUSH_BYTES = 64 << 20

# Runners that execute on this machine and keep their shuffles in memory.
LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner")


class PreprocessError(BertpipeError, ValueError):
    """Bad input or an output directory the job must not touch; raised before the pipeline starts."""


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
    bucket_mb: float = 2.0
    shard_mb: float = 64.0
    language: str = "en"
    sentence_splitter: str = field(default_factory=SentenceSplitter.description)

    def __post_init__(self) -> None:
        if self.input_format not in FORMATS:
            raise PreprocessError(f"input format {self.input_format!r} is not one of {list(FORMATS)}")
        if self.dupe_factor < 1:
            raise PreprocessError(f"dupe_factor must be at least 1, got {self.dupe_factor}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise PreprocessError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.max_seq_length > np.iinfo(POSITION_DTYPE).max:
            raise PreprocessError(f"max_seq_length must be at most {np.iinfo(POSITION_DTYPE).max}")
        try:
            PairingParams(self.max_seq_length, self.short_seq_prob)  # validates those two
        except ValueError as error:
            raise PreprocessError(str(error)) from None
        if not 1 <= self.max_predictions_per_seq <= self.max_seq_length - 3:
            raise PreprocessError(
                f"max_predictions_per_seq={self.max_predictions_per_seq} must be between 1 and the maskable "
                f"tokens of a sequence (max_seq_length - 3 = {self.max_seq_length - 3})"
            )
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise PreprocessError(f"masked_lm_prob must be in (0, 1), got {self.masked_lm_prob}")
        if self.bucket_mb <= 0 or self.shard_mb <= 0:
            raise PreprocessError("bucket_mb and shard_mb must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReadTask:
    index: int
    path: str
    name: str  # the path below the inputs' common directory: names documents wherever the corpus lives
    start: int
    end: int
    compressed: bool
    row_group: int = -1  # Parquet: one task per row group


def plan_reads(files: list[tuple[str, int]], input_format: str, text_field: str) -> list[ReadTask]:
    """Byte ranges of uncompressed text and JSON Lines, whole compressed files, Parquet row groups."""
    total = sum(size for _, size in files)
    step = int(min(MAX_RANGE_BYTES, max(MIN_RANGE_BYTES, total // 64)))
    common = common_directory([path for path, _ in files])
    spans: list[tuple[str, str, int, int, bool, int]] = []
    for path, size in files:
        if input_format == "parquet":
            import pyarrow.parquet as pq

            with fs.open_read(path) as handle:
                parquet = pq.ParquetFile(handle)
                columns = parquet.schema_arrow.names
                if text_field not in columns:
                    raise PreprocessError(
                        f"{path} has no column {text_field!r} (columns: {columns}); choose one with --text-field"
                    )
                groups = parquet.num_row_groups
            spans.extend((path, path[len(common) :], 0, size, False, g) for g in range(groups))
        elif fs.is_compressed(path):
            spans.append((path, path[len(common) :], 0, size, True, -1))
        else:
            name = path[len(common) :]
            spans.extend((path, name, start, min(size, start + step), False, -1) for start in range(0, size, step))
    return [ReadTask(i, *span) for i, span in enumerate(spans)]


def common_directory(paths: list[str]) -> str:
    """The longest directory prefix (ending in "/") that all paths share."""
    prefix = paths[0].rsplit("/", 1)[0] + "/" if "/" in paths[0] else ""
    while prefix and not all(p.startswith(prefix) for p in paths):
        prefix = prefix[:-1].rsplit("/", 1)[0] + "/" if "/" in prefix[:-1] else ""
    return prefix


def sum_counters(counters: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return dict(total)


@dataclass(frozen=True)
class Counts:
    """A step's counters, an element of its one output beside the data. Not a tagged output: some runners
    (Dask's) mix tagged outputs into the main one."""

    values: dict[str, int]


def counted(counters: dict[str, int]) -> Counts:
    """Counters travel as data (summed into the manifest) and as Beam metrics (for the runner's UI)."""
    for name, value in counters.items():
        Metrics.counter(METRICS_NAMESPACE, name).inc(value)
    return Counts(counters)


def split_counts(outputs: beam.PCollection, step: str) -> tuple[beam.PCollection, beam.PCollection]:
    """(the data, the counters as dicts) of a step's output."""
    data = outputs | f"{step}Data" >> beam.Filter(lambda element: not isinstance(element, Counts))
    counts = outputs | f"{step}Counts" >> beam.FlatMap(
        lambda element: [element.values] if isinstance(element, Counts) else []
    )
    return data, counts


class ReadAndTokenize(beam.DoFn):
    """A read task -> its tokenized documents, by bucket.

    A task hands its documents on whenever it holds FLUSH_BYTES of them, and at its end. With a `work_dir`
    (local runs) each hand-on is one file and the element per bucket is
    (bucket, (file, start, length)) naming that bucket's slice of it; without, the element is
    (bucket, encoded documents) for the runner's shuffle, which a distributed runner keeps on disk
    and which scales past the point where tasks x buckets slices would be too many files to read.
    """

    def __init__(self, params: JobParams, plan: BucketPlan, tokenizer_json: str, work_dir: str | None):
        self.params, self.plan, self.tokenizer_json, self.work_dir = params, plan, tokenizer_json, work_dir

    def setup(self) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one worker, one core
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(self.tokenizer_json)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        # A sentence of more than ~10 characters per token of the sequence can never fit whole; the
        # cut also bounds the rare paragraph sentencex leaves unsplit (one starting with "(a)").
        self.splitter = SentenceSplitter(self.params.language, max_sentence_chars=self.params.max_seq_length * 10)

    def process(self, task: ReadTask) -> Iterator[Any]:
        read_stats = docs.ReadStats()
        counters: Counter[str] = Counter()
        by_bucket: dict[Bucket, list[bytes]] = defaultdict(list)
        pending: list[tuple[str, list[str]]] = []
        pending_sentences = 0
        held, part = 0, 0
        for raw in self.read(task, read_stats):
            sentences = [s for paragraph in raw.paragraphs for s in self.splitter.split(paragraph, counters)]
            pending.append((raw.key, sentences))
            pending_sentences += len(sentences)
            if pending_sentences >= TOKENIZE_BATCH_SENTENCES:
                held += self.tokenize(pending, counters, by_bucket)
                pending, pending_sentences = [], 0
                if held >= FLUSH_BYTES:
                    yield from self.hand_on(task, part, by_bucket)
                    by_bucket, held, part = defaultdict(list), 0, part + 1
        self.tokenize(pending, counters, by_bucket)
        yield from self.hand_on(task, part, by_bucket)
        counters.update(read_stats.as_dict())
        yield counted(dict(counters))

    def hand_on(self, task: ReadTask, part: int, by_bucket: dict[Bucket, list[bytes]]) -> Iterator[Any]:
        """The documents tokenized so far, by bucket: to the shuffle, or to one work file (the task's `part`-th)
        and a (file, start, length) slice of it per bucket. A bucket may get several parts from one task; its
        documents are sorted by key before use, so the parts' boundaries change nothing."""
        chunks = [(bucket, b"".join(by_bucket[bucket])) for bucket in sorted(by_bucket)]
        if self.work_dir is None:
            yield from chunks
            return
        if not chunks:
            return
        suffix = f"-{part}" if part else ""
        path = fs.join(self.work_dir, f"documents-{task.index:06d}{suffix}.msgpack")
        fs.write_atomically(path, b"".join(data for _, data in chunks))
        offset = 0
        for bucket, data in chunks:
            yield bucket, (path, offset, len(data))
            offset += len(data)

    def read(self, task: ReadTask, stats: docs.ReadStats) -> Iterator[docs.RawDocument]:
        if self.params.input_format == "parquet":
            yield from parquet_documents(task, self.params.text_field, stats)
            return
        end = 1 << 62 if task.compressed else task.end
        with fs.open_input(task.path) as stream:
            if self.params.input_format == "text":
                yield from docs.text_documents(stream, task.name, task.start, end, stats)
            else:
                yield from docs.jsonl_documents(stream, task.name, task.start, end, self.params.text_field, stats)

    def tokenize(
        self,
        pending: list[tuple[str, list[str]]],
        counters: Counter[str],
        by_bucket: dict[Bucket, list[bytes]],
    ) -> int:
        """Tokenizes `pending` into `by_bucket`; returns the bytes added."""
        added = 0
        flat = [s for _, sentences in pending for s in sentences]
        encodings = self.tokenizer.encode_batch_fast(flat, add_special_tokens=False) if flat else []
        cursor = 0
        for key, sentences in pending:
            document = Document.from_sentences([e.ids for e in encodings[cursor : cursor + len(sentences)]])
            cursor += len(sentences)
            if document.num_sentences == 0:
                counters["empty_documents"] += 1
                continue
            counters["sentences"] += document.num_sentences
            counters["input_tokens"] += len(document.tokens)
            counters["single_sentence_documents"] += document.num_sentences == 1
            encoded = encode_document(key, document)
            by_bucket[assign(key, self.params.seed, self.params.validation_fraction, self.plan)].append(encoded)
            added += len(encoded)
        return added


def encode_document(key: str, document: Document) -> bytes:
    return msgpack.packb([key, document.tokens.astype("<i4").tobytes(), document.offsets.astype("<i8").tobytes()])


def decode_documents(data: bytes) -> Iterator[tuple[str, Document]]:
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1 << 20))
    unpacker.feed(data)
    for key, tokens, offsets in unpacker:
        yield key, Document(np.frombuffer(tokens, dtype="<i4"), np.frombuffer(offsets, dtype="<i8"))


def parquet_documents(task: ReadTask, column: str, stats: docs.ReadStats) -> Iterator[docs.RawDocument]:
    import pyarrow.parquet as pq

    with fs.open_read(task.path) as handle:
        table = pq.ParquetFile(handle).read_row_group(task.row_group, columns=[column])
        for row, text in enumerate(table.column(column).to_pylist()):
            if not isinstance(text, str):
                stats.malformed_records += 1
                continue
            yield from docs.text_record(text, f"{task.name}@{task.row_group}:{row}", stats)


class MakeInstances(beam.DoFn):
    """A bucket's document slices -> its samples file (encoded samples back to back, then an index
    of offsets and token counts); emits (bucket, BucketFile)."""

    def __init__(self, params: JobParams, tokenizer_json: str, work_dir: str):
        self.params, self.tokenizer_json, self.work_dir = params, tokenizer_json, work_dir

    def setup(self) -> None:
        from tokenizers import Tokenizer

        from preprocessing.shards import token_dtype
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

    def process(self, element: tuple[Bucket, Iterable[bytes | tuple[str, int, int]]]) -> Iterator[Any]:
        (split, bucket), parts = element
        keyed = [
            pair
            for part in parts
            for pair in decode_documents(part if isinstance(part, bytes) else fs.read_bytes(*part))
        ]
        keyed.sort(key=lambda pair: pair[0])  # arrival order is the runner's, not ours
        samples, stats = bucket_instances(
            [document for _, document in keyed],
            (self.params.seed, split, bucket),
            self.pairing,
            self.params.dupe_factor,
            self.rule,
            self.special,
            self.dtype,
        )
        body = b"".join(samples.data)
        sizes = np.array([len(d) for d in samples.data], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(sizes)))
        index = msgpack.packb(
            {
                "offsets": offsets.astype("<i8").tobytes(),
                "tokens": samples.tokens.astype("<i8").tobytes(),
                "masked": samples.masked.astype("<i8").tobytes(),
            }
        )
        path = fs.join(self.work_dir, f"samples-{split}-{bucket:06d}.msgpack")
        fs.write_atomically(path, body + index + len(index).to_bytes(8, "little"))
        yield (split, bucket), BucketFile(path=path, samples=len(samples.data), tar_bytes=tar_member_bytes(sizes))
        yield counted(stats.as_dict())


def read_bucket_index(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, tokens, masked) of a samples file: its last 8 bytes give the index length."""
    with fs.open_read(path) as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(size - 8)
        index_length = int.from_bytes(handle.read(8), "little")
        handle.seek(size - 8 - index_length)
        index = msgpack.unpackb(handle.read(index_length))
    return tuple(np.frombuffer(index[name], dtype="<i8") for name in ("offsets", "tokens", "masked"))


class WriteShard(beam.DoFn):
    """A ShardTask -> the tar file in the output directory; emits the shard's manifest record, with the counts of
    its instance lengths per bin, which the manifest sums per split."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def process(self, task: ShardTask) -> Iterator[dict]:
        members: list[tuple[str, bytes]] = []
        tokens = masked = 0
        piece_counts: list[list[int]] = []
        for path, first, stop in task.pieces:
            offsets, sample_tokens, sample_masked = read_bucket_index(path)
            body = fs.read_bytes(path, int(offsets[first]), int(offsets[stop] - offsets[first]))
            base = offsets[first]
            for i in range(first, stop):
                key = sample_key(task.split, task.first_sample + len(members))
                members.append((key, body[offsets[i] - base : offsets[i + 1] - base]))
            tokens += int(sample_tokens[first:stop].sum())
            masked += int(sample_masked[first:stop].sum())
            piece_counts.append(length_counts(sample_tokens[first:stop]))
        data = tar_bytes(members)
        name = shard_name(task.split, task.index)
        fs.write_atomically(fs.join(self.output_dir, name), data)
        Metrics.counter(METRICS_NAMESPACE, "shards_written").inc()
        yield {
            "split": task.split,
            "index": task.index,
            "name": name,
            "samples": len(members),
            "tokens": tokens,
            "masked_tokens": masked,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "length_counts": sum_counts(piece_counts),
        }


class WriteManifest(beam.DoFn):
    """Last step: remove the work files, then write manifest.json, which marks the dataset finished."""

    def __init__(self, output_dir: str, work_dir: str, recipe: dict[str, Any]):
        self.output_dir, self.work_dir, self.recipe = output_dir, work_dir, recipe

    def process(self, records: list[dict], counters: dict[str, int]) -> Iterator[str]:
        fs.delete([self.work_dir])
        manifest = build_manifest(shard_records=records, counters=counters, **self.recipe)
        path = fs.join(self.output_dir, MANIFEST_NAME)
        fs.write_atomically(path, manifest_bytes(manifest))
        yield path


@dataclass(frozen=True)
class Job:
    """One preprocessing run, as the pipeline needs it."""

    tasks: list[ReadTask]
    params: JobParams
    plan: BucketPlan
    tokenizer_json: str
    output_dir: str
    recipe: dict[str, Any]  # the manifest's fixed part: parameters, inputs, tokenizer, dtypes


def build_pipeline(pipeline: beam.Pipeline, job: Job, shuffle_documents: bool) -> None:
    work_dir = fs.join(job.output_dir, WORK_DIR)
    reader = ReadAndTokenize(job.params, job.plan, job.tokenizer_json, None if shuffle_documents else work_dir)
    slices, read_counts = split_counts(
        pipeline
        | "ReadTasks" >> beam.Create(job.tasks)
        | "SpreadReads" >> beam.Reshuffle()
        | "ReadAndTokenize" >> beam.ParDo(reader),
        "Read",
    )
    buckets, instance_counts = split_counts(
        slices
        | "GroupBuckets" >> beam.GroupByKey()
        | "MakeInstances" >> beam.ParDo(MakeInstances(job.params, job.tokenizer_json, work_dir)),
        "Instances",
    )
    records = (
        buckets
        | "AllBuckets" >> beam.combiners.ToDict()
        | "PlanShards" >> beam.FlatMap(plan_shards, shard_mb=job.params.shard_mb)
        | "SpreadShards" >> beam.Reshuffle()
        | "WriteShards" >> beam.ParDo(WriteShard(job.output_dir))
        | "AllRecords" >> beam.combiners.ToList()
    )
    counters = (
        (read_counts, instance_counts)
        | "AllCounters" >> beam.Flatten()
        | "SumCounters" >> beam.CombineGlobally(sum_counters)
    )
    _ = records | "WriteManifest" >> beam.ParDo(
        WriteManifest(job.output_dir, work_dir, job.recipe), counters=beam.pvalue.AsSingleton(counters)
    )


def local_multiprocess_runner(options: PipelineOptions) -> Any:
    """For the local FnApiRunner in multi-process mode: the same runner with its worker processes started through
    `preprocessing.beam_worker`, whose logs follow the job's; None (Beam's choice from the options) otherwise."""
    from apache_beam.options.pipeline_options import DirectOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms.environments import SubprocessSDKEnvironment

    direct = options.view_as(DirectOptions)
    runner = str(options.get_all_options().get("runner") or "")
    if runner.rsplit(".", 1)[-1] != "FnApiRunner" or direct.direct_running_mode != "multi_processing":
        return None
    command = f"{shlex.quote(sys.executable)} -m preprocessing.beam_worker"
    # The environment given here is what makes the runner multi-process; "multi_processing" would replace it
    # with Beam's own worker command, so the mode is set back to the one that keeps the given environment.
    direct.direct_running_mode = "in_memory"
    return FnApiRunner(default_environment=SubprocessSDKEnvironment.from_command_string(command))


def run_pipeline(job: Job, beam_args: list[str], shuffle_documents: bool | None = None) -> dict[str, int]:
    """Run to completion; return the Beam metric counters the runner reports.

    Documents reach their buckets through work files on the local DirectRunner (whose shuffle is
    in memory) and through the runner's shuffle on any other runner, unless `shuffle_documents`
    says otherwise. The output bytes are the same either way.
    """
    options = PipelineOptions(beam_args)
    if shuffle_documents is None:
        runner = str(options.get_all_options().get("runner") or "DirectRunner")
        shuffle_documents = runner.rsplit(".", 1)[-1] not in LOCAL_RUNNERS
    pipeline = beam.Pipeline(runner=local_multiprocess_runner(options), options=options)
    build_pipeline(pipeline, job, shuffle_documents)
    result = pipeline.run()
    result.wait_until_finish()
    metrics: dict[str, int] = {}
    try:
        for counter in result.metrics().query()["counters"]:
            if counter.key.metric.namespace == METRICS_NAMESPACE:
                name = counter.key.metric.name
                metrics[name] = metrics.get(name, 0) + counter.committed
    except (NotImplementedError, KeyError, AttributeError):  # a runner without metric queries
        logger.warning("this runner does not report Beam metrics; the counters are in the manifest")
    return metrics
