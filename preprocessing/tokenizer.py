"""WordPiece tokenizer: training, loading from `tokenizer.json` or `vocab.txt`, and the facts
about it that the shards' manifest records and the trainer checks."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from preprocessing import storage
from preprocessing.errors import BertpipeError
from preprocessing.manifest import TokenizerInfo
from preprocessing.masking import MaskingRule
from preprocessing.storage import join

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TOKENIZER_JSON = "tokenizer.json"
VOCAB_TXT = "vocab.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
# [unused0] etc.: reserved rows of published BERT vocabularies, never real text.
_RESERVED = re.compile(r"^\[[^\]]+\]$")


class TokenizerError(BertpipeError, ValueError):
    """A tokenizer directory that cannot serve BERT preprocessing."""


def build_wordpiece(vocab: dict[str, int] | None, lowercase: bool) -> Tokenizer:
    """A BERT WordPiece tokenizer (BERT normalizer and pre-tokenizer, [CLS] A [SEP] B [SEP])."""
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab or {}, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def add_pair_template(tokenizer: Tokenizer) -> None:
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )


def train_wordpiece(texts: Iterable[str], vocab_size: int, lowercase: bool, min_frequency: int = 2) -> Tokenizer:
    """Learn a WordPiece vocabulary of `vocab_size` entries (fewer when the corpus has too few merges, more
    when its alphabet alone is larger): the special tokens, every character of the corpus, `##` and every
    character that can continue a word, then the merges. The same corpus gives the same vocabulary on every
    run. `texts` is read twice (a one-shot iterator is held in memory)."""
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise TokenizerError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    if iter(texts) is texts:
        texts = list(texts)
    tokenizer = build_wordpiece(None, lowercase)
    characters, continuations = corpus_alphabet(texts, tokenizer)
    # The trainer numbers the `##` pieces in hash-map order as it first meets them, and ties between merges
    # of equal count go to the lower ids, so two runs on one corpus learn different vocabularies. Handing it
    # the whole alphabet in a fixed order first leaves nothing to number by chance.
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[*SPECIAL_TOKENS, *characters, *continuations],
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # The alphabet was passed as special tokens only to fix its ids: rebuild with the learned vocabulary, so
    # that only BERT's five are special (kept whole in text, dropped when decoding).
    trained = build_wordpiece(tokenizer.get_vocab(with_added_tokens=False), lowercase)
    trained.add_special_tokens(list(SPECIAL_TOKENS))
    add_pair_template(trained)
    return trained


def corpus_alphabet(texts: Iterable[str], tokenizer: Tokenizer) -> tuple[list[str], list[str]]:
    """The characters of the normalized corpus that the pre-tokenizer keeps in words, in code point order,
    and `##` with each of them that can continue a word (not punctuation or CJK, which stand alone). Every
    `##` piece is kept whether or not the corpus has it inside a word, as BERT's own vocabularies do: a word
    with a character the vocabulary cannot continue with becomes [UNK] whole."""
    normalize, pre_tokenize = tokenizer.normalizer.normalize_str, tokenizer.pre_tokenizer.pre_tokenize_str

    def words(text: str) -> list[str]:
        return [word for word, _ in pre_tokenize(normalize(text))]

    seen: set[str] = set()
    for text in texts:
        seen.update(normalize(text))
    characters = sorted(c for c in seen if words(c) == [c])  # not whitespace
    return characters, ["##" + c for c in characters if words(c + c) == [c + c]]


def vocabulary(tokenizer: Tokenizer) -> list[str]:
    """Tokens in id order."""
    by_id = sorted((i, token) for token, i in tokenizer.get_vocab(with_added_tokens=True).items())
    if [i for i, _ in by_id] != list(range(len(by_id))):
        raise TokenizerError("the vocabulary's ids are not 0..N-1 without gaps")
    return [token for _, token in by_id]


def lowercases(tokenizer: Tokenizer) -> bool | None:
    """Whether the normalizer lowercases (None when it cannot be told from tokenizer.json)."""
    normalizer = json.loads(tokenizer.to_str()).get("normalizer") or {}
    parts = normalizer.get("normalizers", [normalizer])
    for part in parts:
        if part.get("type") == "BertNormalizer":
            return bool(part.get("lowercase"))
        if part.get("type") == "Lowercase":
            return True
    return False if parts else None


def tokenizer_files(tokenizer: Tokenizer) -> dict[str, bytes]:
    """tokenizer.json, vocab.txt and a Hugging Face tokenizer_config.json, by file name."""
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": bool(lowercases(tokenizer)),
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    return {
        TOKENIZER_JSON: tokenizer.to_str(pretty=True).encode("utf-8"),
        VOCAB_TXT: ("\n".join(vocabulary(tokenizer)) + "\n").encode("utf-8"),
        TOKENIZER_CONFIG: (json.dumps(config, indent=2) + "\n").encode("utf-8"),
    }


def load_tokenizer(directory: str | Path, lowercase: bool | None = None) -> Tokenizer:
    """From `tokenizer.json`, or else from `vocab.txt` (lowercasing from `lowercase`, else from
    `tokenizer_config.json`'s do_lower_case, else True as in the uncased BERT release). `directory` may be a
    local path or a URL (a dataset on an object store holds its tokenizer)."""
    directory = str(directory)
    tokenizer_json, vocab_txt = join(directory, TOKENIZER_JSON), join(directory, VOCAB_TXT)
    if storage.is_file(tokenizer_json):
        try:
            tokenizer = Tokenizer.from_str(storage.read_bytes(tokenizer_json).decode("utf-8"))
        except Exception as error:  # the tokenizers library raises a bare Exception with serde's message
            raise TokenizerError(
                f"{tokenizer_json} is not a readable tokenizer file ({error}); it may be truncated "
                f"or from another program: copy it again, or train one with `bertpipe tokenizer train`"
            ) from None
    elif storage.is_file(vocab_txt):
        tokens = storage.read_bytes(vocab_txt).decode("utf-8").splitlines()
        if lowercase is None:
            lowercase = _configured_lowercase(directory)
        tokenizer = build_wordpiece({token: i for i, token in enumerate(tokens)}, lowercase)
        check_special_tokens(tokenizer, directory)
        add_pair_template(tokenizer)
    else:
        raise TokenizerError(
            f"{directory} holds neither {TOKENIZER_JSON} nor {VOCAB_TXT}; train one with "
            f"`bertpipe tokenizer train` or point --tokenizer at a BERT model directory"
        )
    check_special_tokens(tokenizer, directory)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _configured_lowercase(directory: str) -> bool:
    config = join(directory, TOKENIZER_CONFIG)
    if storage.is_file(config):
        return bool(storage.read_json(config).get("do_lower_case", True))
    return True


def check_special_tokens(tokenizer: Tokenizer, source: Path | str) -> None:
    missing = [token for token in SPECIAL_TOKENS if tokenizer.token_to_id(token) is None]
    if missing:
        raise TokenizerError(
            f"the vocabulary in {source} lacks the special token(s) {missing}; BERT preprocessing needs "
            f"all of {list(SPECIAL_TOKENS)}"
        )


def tokenizer_info(tokenizer: Tokenizer) -> TokenizerInfo:
    vocab = vocabulary(tokenizer)
    return TokenizerInfo(
        vocab_size=len(vocab),
        vocab_sha256=hashlib.sha256(("\n".join(vocab) + "\n").encode("utf-8")).hexdigest(),
        special_token_ids={token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS},
        lowercase=lowercases(tokenizer),
    )


def masking_rule(tokenizer: Tokenizer, masked_lm_prob: float, max_predictions: int, whole_word: bool) -> MaskingRule:
    """The MaskingRule of this vocabulary: which ids are special, which continue a word."""
    vocab = vocabulary(tokenizer)
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    never_masked = np.zeros(len(vocab), dtype=bool)
    never_masked[[ids["[PAD]"], ids["[CLS]"], ids["[SEP]"], ids["[MASK]"]]] = True
    reserved = np.array([bool(_RESERVED.match(token)) for token in vocab])
    return MaskingRule(
        mask_id=ids["[MASK]"],
        never_masked=never_masked,
        replacements=np.flatnonzero(~reserved).astype(np.int32),
        continues_word=np.array([token.startswith("##") for token in vocab]),
        masked_lm_prob=masked_lm_prob,
        max_predictions=max_predictions,
        whole_word=whole_word,
    )
