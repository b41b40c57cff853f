"""A dataset's manifest checked against the model before any compute: a vocabulary or length that
does not fit would otherwise surface as an index error deep inside the first step, or not at all."""

from __future__ import annotations

import logging
from pathlib import Path

from model.config import BertConfig
from preprocessing.errors import BertpipeError, MissingInputError
from preprocessing.manifest import MANIFEST_NAME, Manifest, ManifestError, TokenizerInfo
from preprocessing.storage import exists, join, read_bytes, read_json
from preprocessing.tokenizer import VOCAB_TXT

log = logging.getLogger(__name__)


class DatasetMismatch(BertpipeError, ValueError):
    """The dataset and the model disagree; the message names both values."""


def load_manifest(dataset_dir: str | Path) -> Manifest:
    path = join(str(dataset_dir), MANIFEST_NAME)
    if not exists(str(dataset_dir)):
        raise MissingInputError(f"dataset directory {dataset_dir} does not exist; run `bertpipe preprocess` first")
    if not exists(path):
        raise MissingInputError(
            f"{dataset_dir} has no {MANIFEST_NAME}: not a finished dataset (an interrupted `bertpipe preprocess` "
            f"leaves none; rerun it into the same directory)"
        )
    try:
        manifest = Manifest.from_dict(read_json(path), source=path)
    except ManifestError as error:
        raise DatasetMismatch(str(error)) from error
    except ValueError as error:  # not JSON, or not UTF-8
        raise DatasetMismatch(
            f"{path} is not a readable manifest ({error}); the dataset directory was altered after preprocessing",
            hint="preprocess again",
        ) from error
    check_vocabulary_file(str(dataset_dir), manifest)
    return manifest


def check_vocabulary_file(dataset_dir: str, manifest: Manifest) -> None:
    """The vocabulary written beside the shards must have the size the manifest states: the model is built
    from the manifest and exported with that vocabulary, which would then contradict each other."""
    vocab_path = join(dataset_dir, VOCAB_TXT)
    if not exists(vocab_path):
        return
    tokens = len(read_bytes(vocab_path).decode("utf-8").splitlines())
    stated = manifest.tokenizer.vocab_size
    if tokens != stated:
        raise DatasetMismatch(
            f"{join(dataset_dir, MANIFEST_NAME)} states a vocabulary of {stated} tokens but {vocab_path} has "
            f"{tokens}: the dataset directory was altered after preprocessing; preprocess again"
        )


def check_against_model(manifest: Manifest, config: BertConfig) -> None:
    """Vocabulary size, sequence length and [PAD] id must agree."""
    problems = []
    if manifest.tokenizer.vocab_size != config.vocab_size:
        problems.append(
            f"the dataset's vocabulary has {manifest.tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{config.vocab_size}"
        )
    if manifest.max_seq_length > config.max_position_embeddings:
        problems.append(
            f"the dataset's max_seq_length is {manifest.max_seq_length} but the model has only "
            f"{config.max_position_embeddings} positions (max_position_embeddings)"
        )
    pad_id = manifest.tokenizer.pad_id
    if pad_id != config.pad_token_id:
        problems.append(f"the dataset's [PAD] id is {pad_id} but the model's pad_token_id is {config.pad_token_id}")
    if problems:
        raise DatasetMismatch(
            "; ".join(problems) + "; preprocess with the model's tokenizer or change the model config"
        )


def check_init_tokenizer(manifest: Manifest, init_from: str | Path) -> None:
    """The weights of `--init-from` must come from the dataset's tokenizer: with another vocabulary (or another
    casing) each id means another word, and training starts from noise that looks like a pretrained model."""
    source = init_tokenizer(Path(init_from))
    if source is None:
        log.info(
            "--init-from %s: no tokenizer is stored with it; its vocabulary is taken to be the dataset's", init_from
        )
        return
    theirs, where = source
    ours = manifest.tokenizer
    problems = []
    if ours.vocab_sha256 and theirs.vocab_sha256 and ours.vocab_sha256 != theirs.vocab_sha256:
        problems.append(f"its vocabulary ({theirs.vocab_size} tokens) is not the dataset's ({ours.vocab_size} tokens)")
    if ours.lowercase is not None and theirs.lowercase is not None and ours.lowercase != theirs.lowercase:
        cased = {True: "uncased", False: "cased"}
        problems.append(f"it is {cased[theirs.lowercase]} and the dataset {cased[ours.lowercase]}")
    if problems:
        raise DatasetMismatch(
            f"--init-from {init_from} was trained with another tokenizer ({where}): {'; '.join(problems)}; preprocess "
            f"the corpus with that tokenizer (`bertpipe preprocess --tokenizer {where}`), or start from other weights"
        )


def init_tokenizer(source: Path) -> tuple[TokenizerInfo, str] | None:
    """(the tokenizer `source` was trained with, where it was found): the files of a model directory, or the
    dataset manifest of the run a checkpoint comes from; None where neither is there."""
    from preprocessing.tokenizer import load_tokenizer, tokenizer_info

    if (source / VOCAB_TXT).is_file() or (source / "tokenizer.json").is_file():
        return tokenizer_info(load_tokenizer(source)), str(source)
    from pipeline.training.weights import checkpoint_tag_dir, model_states

    tag_dir = checkpoint_tag_dir(source)
    dataset = model_states(tag_dir).get("dataset") if tag_dir is not None else None
    if dataset and exists(join(str(dataset), MANIFEST_NAME)):
        return load_manifest(dataset).tokenizer, str(dataset)
    return None
