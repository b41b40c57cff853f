"""`bertpipe tokenizer train`: a WordPiece vocabulary learned from the corpus, or from a sample of it drawn evenly
across every file (text, JSON Lines, compressed or not, Parquet)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from preprocessing import documents as docs
from preprocessing import storage as fs
from preprocessing.preprocess import PreprocessError, match_inputs
from preprocessing.tokenizer import TOKENIZER_JSON, VOCAB_TXT, tokenizer_files, train_wordpiece, vocabulary

logger = logging.getLogger(__name__)


WINDOW_BYTES = 1 << 20  # at most, a sampled stretch of an uncompressed file (the documents that start in it)
SPREAD_WINDOWS = 64  # at least, per file, where its share is large enough to split
MIN_WINDOW_BYTES = 4096


@dataclass(frozen=True)
class SampleRead:
    """One read of the tokenizer's sample: a byte range of an uncompressed text or JSON Lines file, every
    `keep_every`-th document of a compressed one, or some row groups of a Parquet file."""

    path: str
    start: int = 0
    end: int = 1 << 62
    keep_every: int = 1
    row_groups: tuple[int, ...] | None = None  # Parquet only; None: every row group


def plan_sample(
    files: Sequence[tuple[str, int]], budget: int, row_groups: Mapping[str, int] | None = None
) -> list[SampleRead]:
    """About `budget` stored bytes drawn evenly across every file, in file order: all of a corpus that fits;
    else the same share of each file, as evenly spaced windows of uncompressed files (SPREAD_WINDOWS or more,
    each WINDOW_BYTES or smaller),
    every n-th document of compressed ones (which cannot be entered mid-way), and evenly spaced row groups of
    Parquet files (`row_groups`: each Parquet file's count). A vocabulary learned from the first files only
    would miss what the later ones hold."""
    total = sum(size for _, size in files)
    if total <= budget:
        return [SampleRead(path) for path, _ in files]
    share = budget / total
    reads: list[SampleRead] = []
    for path, size in files:
        if row_groups is not None and path in row_groups:
            groups = row_groups[path]
            taken = max(1, round(groups * share))
            reads.append(SampleRead(path, row_groups=tuple(sorted({int(i * groups / taken) for i in range(taken)}))))
        elif fs.is_compressed(path):
            reads.append(SampleRead(path, keep_every=max(1, round(1 / share))))
        else:
            wanted = max(1, round(size * share))
            windows = max(-(-wanted // WINDOW_BYTES), min(SPREAD_WINDOWS, wanted // MIN_WINDOW_BYTES), 1)
            length = wanted // windows
            for index in range(windows):
                start = index * size // windows
                reads.append(SampleRead(path, start, start + max(1, length)))
    return reads


def sample_paragraphs(reads: Sequence[SampleRead], input_format: str, text_field: str) -> Iterator[str]:
    """The paragraphs of the planned reads, read by read."""
    stats = docs.ReadStats()
    for read in reads:
        if input_format == "parquet":
            yield from _parquet_paragraphs(read, text_field)
            continue
        with fs.open_input(read.path) as stream:
            reader = (
                docs.text_documents(stream, read.path, read.start, read.end, stats)
                if input_format == "text"
                else docs.jsonl_documents(stream, read.path, read.start, read.end, text_field, stats)
            )
            for number, document in enumerate(reader):
                if number % read.keep_every == 0:
                    yield from document.paragraphs


@dataclass(frozen=True)
class Sample:
    """The planned reads' paragraphs, read anew on each pass (training takes two), never held in memory."""

    reads: Sequence[SampleRead]
    input_format: str
    text_field: str

    def __iter__(self) -> Iterator[str]:
        return sample_paragraphs(self.reads, self.input_format, self.text_field)


def _parquet_paragraphs(read: SampleRead, column: str) -> Iterator[str]:
    """The planned row groups' paragraphs, read as the Beam job reads a row group (`parquet_documents`)."""
    import pyarrow.parquet as pq

    from preprocessing.beam_job import ReadTask, parquet_documents

    with fs.open_read(read.path) as handle:
        parquet = pq.ParquetFile(handle)
        if column not in parquet.schema_arrow.names:
            raise PreprocessError(f"{read.path} has no column {column!r}; pass --text-field with one of its columns")
        groups = read.row_groups if read.row_groups is not None else range(parquet.num_row_groups)
    stats = docs.ReadStats()
    for group in groups:
        task = ReadTask(0, read.path, read.path, 0, 0, compressed=False, row_group=group)
        for document in parquet_documents(task, column, stats):
            yield from document.paragraphs


def parquet_row_groups(files: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Each Parquet file's row-group count; a file that is not Parquet is named."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    counts = {}
    for path, _ in files:
        try:
            with fs.open_read(path) as handle:
                counts[path] = pq.ParquetFile(handle).num_row_groups
        except (pa.ArrowException, OSError) as error:
            raise PreprocessError(
                f"{path} is not a readable Parquet file ({error}); check the file, or pass --format for another format"
            ) from error
    return counts


def train(
    inputs: list[str],
    out: str,
    vocab_size: int,
    lowercase: bool,
    input_format: str = "text",
    text_field: str = "text",
    sample_mb: float = 1024.0,
    overwrite: bool = False,
) -> int:
    """Train and write tokenizer.json, vocab.txt and tokenizer_config.json; return the vocab size."""
    existing = [name for name in (TOKENIZER_JSON, VOCAB_TXT) if fs.exists(fs.join(out, name))]
    if existing and not overwrite:
        raise PreprocessError(f"{out} already holds {existing}; pass --overwrite or choose another --out")
    files = match_inputs(inputs)
    row_groups = parquet_row_groups(files) if input_format == "parquet" else None
    reads = plan_sample(files, int(sample_mb * 2**20), row_groups)
    tokenizer = train_wordpiece(Sample(reads, input_format, text_field), vocab_size=vocab_size, lowercase=lowercase)
    fs.make_dirs(out)
    for name, data in tokenizer_files(tokenizer).items():
        fs.write_atomically(fs.join(out, name), data)
    size = len(vocabulary(tokenizer))
    if size < vocab_size:
        logger.warning("the corpus supports only %d vocabulary entries of the %d asked for", size, vocab_size)
    return size
