"""`bertpipe tokenizer train`: a WordPiece vocabulary learned from (a sample of) the corpus."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from preprocessing import documents as docs
from preprocessing import storage as fs
from preprocessing.preprocess import PreprocessError, match_inputs
from preprocessing.tokenizer import TOKENIZER_JSON, VOCAB_TXT, tokenizer_files, train_wordpiece, vocabulary

logger = logging.getLogger(__name__)


def corpus_paragraphs(
    files: list[tuple[str, int]], input_format: str, text_field: str, max_bytes: int
) -> Iterator[str]:
    """Paragraphs of the corpus, file by file, until `max_bytes` of text have been given."""
    given = 0
    stats = docs.ReadStats()
    for path, _ in files:
        if input_format == "parquet":
            raise PreprocessError("train the tokenizer on text or JSON Lines; Parquet is read by preprocess only")
        with fs.open_input(path) as stream:
            reader = (
                docs.text_documents(stream, path, 0, 1 << 62, stats)
                if input_format == "text"
                else docs.jsonl_documents(stream, path, 0, 1 << 62, text_field, stats)
            )
            for document in reader:
                for paragraph in document.paragraphs:
                    yield paragraph
                    given += len(paragraph)
                    if given >= max_bytes:
                        return


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
    # Compressed sizes understate the text; the sample limit counts decoded characters instead.
    texts = corpus_paragraphs(files, input_format, text_field, int(sample_mb * 2**20))
    tokenizer = train_wordpiece(texts, vocab_size=vocab_size, lowercase=lowercase)
    fs.make_dirs(out)
    for name, data in tokenizer_files(tokenizer).items():
        fs.write_atomically(fs.join(out, name), data)
    size = len(vocabulary(tokenizer))
    if size < vocab_size:
        logger.warning("the corpus supports only %d vocabulary entries of the %d asked for", size, vocab_size)
    return size
