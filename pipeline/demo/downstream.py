"""The demo's downstream experiment as pure functions: the labelled task dealt into stratified folds (each
seed's runs are tested on one fold, so that every labelled example is a test example once and a gap is not
the luck of one small test set), the validation and training examples of each fold, the seeded subsets of
the training examples for each fraction, the epochs that give every subset the same number of updates, the
plan of fine-tuning runs, the learning rate of each arm chosen on validation, and the test accuracies
aggregated over seeds into means, spreads and the pretrained-minus-scratch gap.

Both arms of a (fraction, seed) pair train on the same subset and are tested on the same fold; the gap is
taken per seed and then summarised, so its spread is the spread of the paired differences. Each arm runs at
every learning rate of the plan and is compared at the one its validation accuracy prefers: random weights
and pretrained weights want different rates, and one shared rate would decide the comparison before it is
made."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ARMS = ("pretrained", "scratch")  # fine-tuned from the pretrained champion, and from random weights
SPLIT_SALT = 20_240  # separate streams for the validation carve, the per-seed subsets and the folds
SUBSET_SALT = 20_241
FOLD_SALT = 20_242


def majority_share(labels: Iterable[Hashable]) -> float:
    """The accuracy of always answering the most frequent label."""
    counts = Counter(labels)
    total = sum(counts.values())
    if not total:
        raise ValueError("no labels to count")
    return max(counts.values()) / total


def check_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:
        raise ValueError(f"a fraction of the training examples must be in (0, 1], got {fraction}")


def subset_size(total: int, fraction: float) -> int:
    """round(fraction * total), halves up, and at least one example."""
    check_fraction(fraction)
    return max(1, min(total, math.floor(fraction * total + 0.5)))


def percent(fraction: float) -> str:
    """0.1 -> '10', 0.125 -> '12.5': for names and tables."""
    return f"{fraction * 100:g}"


def apportion(counts: Mapping[Hashable, int], total: int) -> dict[Hashable, int]:
    """`total` shared among the labels in proportion to `counts` by largest remainder (ties go to the label
    listed first); no label gets more than it has. The quotas add up to `total` exactly."""
    available = sum(counts.values())
    if not 0 <= total <= available:
        raise ValueError(f"cannot draw {total} of {available} examples")
    exact = {label: total * count / available for label, count in counts.items()} if available else {}
    quotas = {label: math.floor(share) for label, share in exact.items()}
    order = sorted(exact, key=lambda label: -(exact[label] - quotas[label]))  # stable: ties keep their order
    left = total - sum(quotas.values())
    for label in order:
        if left == 0:
            break
        if quotas[label] < counts[label]:
            quotas[label] += 1
            left -= 1
    return quotas


def stratified_sample(labels: Sequence[Hashable], count: int, rng: np.random.Generator) -> list[int]:
    """`count` indices into `labels` without replacement, each label contributing in proportion to its share
    (`apportion`); sorted, so that a subset keeps the file's order. Each label's indices are permuted (labels
    in order of first appearance) and the first ones taken: with the same seed, the subsets of growing counts
    are nested wherever the label quotas grow with them (always with two labels)."""
    by_label: dict[Hashable, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    quotas = apportion({label: len(indexes) for label, indexes in by_label.items()}, count)
    chosen: list[int] = []
    for label, indexes in by_label.items():
        permuted = rng.permutation(len(indexes))
        chosen += [indexes[i] for i in permuted[: quotas[label]]]
    return sorted(chosen)


def carve(labels: Sequence[Hashable], fraction: float, seed: int, salt: int) -> tuple[list[int], list[int]]:
    """(kept indices, held-out indices): `fraction` of the examples, stratified by label, held out; both in the
    file's order. `salt` keeps the streams of different carves apart."""
    held = set(stratified_sample(labels, subset_size(len(labels), fraction), np.random.default_rng([salt, seed])))
    return [i for i in range(len(labels)) if i not in held], sorted(held)


def carve_validation(labels: Sequence[Hashable], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training indices, validation indices): the validation split chooses the best epoch."""
    return carve(labels, fraction, seed, SPLIT_SALT)


def assign_folds(labels: Sequence[Hashable], folds: int, seed: int) -> list[int]:
    """The fold (0 .. folds - 1) of each example: each label's examples permuted (seeded) and dealt out in
    turn, so every fold holds each label's share to within one example, and the folds' sizes differ by at
    most one per label."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    if len(labels) < folds:
        raise ValueError(f"{len(labels)} examples cannot fill {folds} folds")
    rng = np.random.default_rng([FOLD_SALT, seed])
    by_label: dict[Hashable, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    fold_of = [0] * len(labels)
    dealt = 0  # continue the turn across labels, so that the folds' totals stay level too
    for indexes in by_label.values():
        for index in (indexes[i] for i in rng.permutation(len(indexes))):
            fold_of[index] = dealt % folds
            dealt += 1
    return fold_of


@dataclass(frozen=True)
class FoldSplit:
    """Indices into the labelled examples, each list in the file's order."""

    train: list[int]
    validation: list[int]  # chooses the epoch and the learning rate
    test: list[int]  # the fold: scored once per run


def split_fold(fold_of: Sequence[int], labels: Sequence[Hashable], fold: int, validation_fraction: float) -> FoldSplit:
    """The fold is the test set; `validation_fraction` of the other folds (stratified, seeded by the fold)
    chooses the epoch and the learning rate; the rest is for training."""
    test = [i for i, f in enumerate(fold_of) if f == fold]
    rest = [i for i, f in enumerate(fold_of) if f != fold]
    if not test:
        raise ValueError(f"fold {fold} is empty")
    kept, held = carve_validation([labels[i] for i in rest], validation_fraction, fold)
    return FoldSplit([rest[i] for i in kept], [rest[i] for i in held], test)


def corpus_without(lines: Iterable[str], held_out: Sequence[str]) -> tuple[list[str], int]:
    """The corpus lines less every line that holds one of the `held_out` texts (a labelled paragraph is a
    line of the corpus, or part of one): a model is not pretrained on the text it is then tested on. Returns
    the kept lines and how many were dropped."""
    texts = [text for text in held_out if text]
    kept: list[str] = []
    dropped = 0
    for line in lines:
        if line and any(text in line for text in texts):
            dropped += 1
        else:
            kept.append(line)
    return kept, dropped


def epochs_for_subset(examples: int, full_examples: int, full_epochs: int, batch_size: int) -> int:
    """The epochs over a subset of `examples` that take at least as many optimizer steps as `full_epochs` over
    all `full_examples` (batches of `batch_size`, the last one short): a smaller subset is read more often.
    Random weights need those updates most; with a fixed number of epochs a 10% subset would get a tenth of
    them, and the comparison would measure an unfinished baseline rather than what pretraining gives."""
    if not 0 < examples <= full_examples:
        raise ValueError(f"a subset of {examples} examples out of {full_examples}")
    if full_epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch size must be at least 1, got {full_epochs} and {batch_size}")
    full_steps = full_epochs * math.ceil(full_examples / batch_size)
    return math.ceil(full_steps / math.ceil(examples / batch_size))


def subset_indices(labels: Sequence[Hashable], fraction: float, seed: int) -> list[int]:
    """The training examples a run with this fraction and seed sees (the same for both arms), stratified by
    label; every example, in order, at fraction 1."""
    count = subset_size(len(labels), fraction)
    if count == len(labels):
        return list(range(len(labels)))
    return stratified_sample(labels, count, np.random.default_rng([SUBSET_SALT, seed]))


@dataclass(frozen=True)
class FinetuneRun:
    arm: str  # one of ARMS
    fraction: float  # of the training examples
    seed: int
    learning_rate: float

    @property
    def label(self) -> str:
        """`<arm>-<percent>pct-lr<rate>-seed<seed>`: the run's directory and MLflow run name."""
        return f"{self.arm}-{percent(self.fraction)}pct-lr{self.learning_rate:g}-seed{self.seed}"

    @property
    def name(self) -> str:
        """The step's and its log's name."""
        return f"finetune-{self.label}"

    @property
    def registered(self) -> bool:
        """The runs registered as the demo's classifier: from the pretrained model, every training example,
        the first seed (fold), one per learning rate; the registry's champion rule (validation accuracy)
        picks among them."""
        return self.arm == "pretrained" and self.fraction == 1.0 and self.seed == 0


def plan_runs(fractions: Sequence[float], seeds: int, learning_rates: Sequence[float]) -> list[FinetuneRun]:
    """Every (seed, fraction, arm, learning rate), seed by seed: an interrupted demo has whole seeds."""
    for fraction in fractions:
        check_fraction(fraction)
    if seeds < 1:
        raise ValueError(f"at least one seed is needed, got {seeds}")
    check_learning_rates(learning_rates)
    return [
        FinetuneRun(arm, f, s, rate) for s in range(seeds) for f in fractions for arm in ARMS for rate in learning_rates
    ]


def check_learning_rates(learning_rates: Sequence[float]) -> None:
    if not learning_rates or any(not rate > 0 for rate in learning_rates):
        raise ValueError(f"the fine-tuning learning rates must be one or more positive numbers: {learning_rates}")
    if list(learning_rates) != sorted(set(learning_rates)):
        raise ValueError(f"the fine-tuning learning rates must increase, without repeats: {learning_rates}")


@dataclass(frozen=True)
class RunResult:
    arm: str
    fraction: float
    seed: int
    learning_rate: float
    validation_accuracy: float  # of the epoch it chose: what the learning rate is chosen by
    test_accuracy: float


def choose_learning_rates(results: Iterable[RunResult]) -> dict[tuple[str, float], float]:
    """For each (arm, fraction), the learning rate whose runs have the highest mean validation accuracy over
    seeds (a tie goes to the smaller rate). Every rate of a pair needs the same seeds, so the means compare
    like with like."""
    accuracy: dict[tuple[str, float], dict[float, dict[int, float]]] = {}
    for result in results:
        by_seed = accuracy.setdefault((result.arm, result.fraction), {}).setdefault(result.learning_rate, {})
        if result.seed in by_seed:
            raise ValueError(
                f"two results for {result.arm}, fraction {result.fraction}, learning rate {result.learning_rate:g}, "
                f"seed {result.seed}"
            )
        by_seed[result.seed] = result.validation_accuracy
    chosen = {}
    for key, by_rate in accuracy.items():
        seeds = {rate: sorted(by_seed) for rate, by_seed in by_rate.items()}
        if len({tuple(s) for s in seeds.values()}) > 1:
            raise ValueError(f"{key[0]}, fraction {key[1]}: the learning rates ran different seeds: {seeds}")
        chosen[key] = max(sorted(by_rate), key=lambda rate: (statistics.fmean(by_rate[rate].values()), -rate))
    return chosen


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float | None  # the sample standard deviation (n - 1); None for a single value
    n: int


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("no values to summarise")
    std = statistics.stdev(values) if len(values) > 1 else None
    return Spread(statistics.fmean(values), std, len(values))


@dataclass(frozen=True)
class Comparison:
    """Test accuracy of both arms at one fraction, each at its chosen learning rate, over seeds, and their gap
    in accuracy points."""

    fraction: float
    train_examples: int
    pretrained: Spread
    scratch: Spread
    gap_points: Spread  # 100 * (pretrained - scratch), over the per-seed differences
    learning_rates: dict[str, float]  # per arm, chosen on validation (choose_learning_rates)

    @property
    def clear(self) -> bool | None:
        """Whether the gap exceeds twice its std in size; None with one seed (no spread to judge by)."""
        if self.gap_points.std is None:
            return None
        return abs(self.gap_points.mean) > 2 * self.gap_points.std


def compare(results: Iterable[RunResult], train_examples: Mapping[float, int]) -> list[Comparison]:
    """One Comparison per fraction, in increasing order, each arm at the learning rate chosen on validation.
    Each fraction needs both arms on the same seeds."""
    results = list(results)
    for result in results:
        if result.arm not in ARMS:
            raise ValueError(f"unknown arm {result.arm!r}; the arms are {ARMS}")
    chosen = choose_learning_rates(results)
    accuracy: dict[float, dict[str, dict[int, float]]] = {}
    for result in results:
        if result.learning_rate != chosen[(result.arm, result.fraction)]:
            continue
        by_seed = accuracy.setdefault(result.fraction, {arm: {} for arm in ARMS})[result.arm]
        by_seed[result.seed] = result.test_accuracy
    comparisons = []
    for fraction in sorted(accuracy):
        pretrained, scratch = (accuracy[fraction][arm] for arm in ARMS)
        if sorted(pretrained) != sorted(scratch) or not pretrained:
            raise ValueError(
                f"fraction {fraction}: the arms ran different seeds (pretrained {sorted(pretrained)}, scratch "
                f"{sorted(scratch)}); the gap needs pairs"
            )
        seeds = sorted(pretrained)
        comparisons.append(
            Comparison(
                fraction=fraction,
                train_examples=train_examples[fraction],
                pretrained=spread([pretrained[s] for s in seeds]),
                scratch=spread([scratch[s] for s in seeds]),
                gap_points=spread([100 * (pretrained[s] - scratch[s]) for s in seeds]),
                learning_rates={arm: chosen[(arm, fraction)] for arm in ARMS},
            )
        )
    return comparisons


def signed_points(spread_: Spread) -> str:
    """'+7.2 ± 2.1', or '+7.2' with one seed."""
    text = f"{spread_.mean:+.1f}"
    return text if spread_.std is None else f"{text} ± {spread_.std:.1f}"


def verdict(comparisons: Sequence[Comparison]) -> str:
    """One plain sentence per fraction: does pretraining change the test accuracy by more than twice the
    spread of the gap over seeds?"""
    if not comparisons:
        raise ValueError("nothing to compare")
    seeds = comparisons[0].gap_points.n
    parts = []
    for c in comparisons:
        where = f"{percent(c.fraction)}% ({c.train_examples} examples)"
        gap = f"{signed_points(c.gap_points)} points"
        if c.clear is None:
            parts.append(f"at {where} the gap is {gap} from a single seed, with no spread to judge it by")
        elif c.clear:
            direction = "helps" if c.gap_points.mean > 0 else "hurts"
            parts.append(f"pretraining {direction} at {where}: {gap}, more than twice its std")
        else:
            parts.append(f"no clear difference at {where}: {gap}, within twice its std")
    runs = f"over {seeds} seeds" if seeds > 1 else "one seed"
    line = f"Verdict (test accuracy, pretrained minus random weights, {runs}): " + "; ".join(parts) + "."
    return line if seeds > 1 else line + " Run with --finetune-seeds 3 or more to judge the gap."
