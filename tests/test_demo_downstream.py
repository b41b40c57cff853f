"""The demo's downstream experiment without running it: the task split and the seeded subsets, the plan of
fine-tuning runs and their commands, the aggregation over seeds, and the report built from those figures."""

from __future__ import annotations

import json
import statistics
import struct
from collections import Counter
from dataclasses import asdict

import pytest

from pipeline.demo.downstream import (
    ARMS,
    RunResult,
    Spread,
    apportion,
    assign_folds,
    carve_validation,
    choose_learning_rates,
    compare,
    corpus_without,
    epochs_for_subset,
    majority_share,
    percent,
    plan_runs,
    split_fold,
    spread,
    stratified_sample,
    subset_indices,
    subset_size,
    verdict,
)
from pipeline.demo.layout import CLASSIFY_TRAIN, CORPUS, FOLDS, SIZES, DemoLayout, DemoSize, fold_of_seed
from pipeline.demo.report import comparison_figures, mlflow_pages, plot_loss_curves, summary_table, trend_limits
from pipeline.demo.steps import demo_steps, held_out_figures, write_task_files

LABELS = ["a"] * 240 + ["b"] * 240


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_majority_share():
    assert majority_share(["a", "b", "a", "a"]) == 0.75
    assert majority_share([1]) == 1.0
    with pytest.raises(ValueError, match="no labels"):
        majority_share([])


@pytest.mark.parametrize(
    ("total", "fraction", "expected"),
    [(384, 0.1, 38), (384, 0.3, 115), (384, 0.5, 192), (384, 1.0, 384), (480, 0.2, 96), (5, 0.1, 1), (10, 0.25, 3)],
)
def test_subset_size_rounds_halves_up_and_keeps_at_least_one(total, fraction, expected):
    assert subset_size(total, fraction) == expected


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_a_fraction_outside_zero_to_one_is_refused(fraction):
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        subset_size(100, fraction)


def test_apportion_shares_by_largest_remainder_and_adds_up_exactly():
    assert apportion({"a": 240, "b": 240}, 38) == {"a": 19, "b": 19}
    assert apportion({"a": 240, "b": 240}, 115) == {"a": 58, "b": 57}  # a tie goes to the label listed first
    assert apportion({"a": 3, "b": 1}, 2) == {"a": 2, "b": 0}
    assert apportion({"a": 90, "b": 7, "c": 3}, 10) == {"a": 9, "b": 1, "c": 0}
    assert apportion({"a": 1, "b": 5}, 6) == {"a": 1, "b": 5}
    with pytest.raises(ValueError, match="cannot draw 7 of 6"):
        apportion({"a": 1, "b": 5}, 7)


def test_stratified_sample_is_exact_in_size_and_per_label():
    import numpy as np

    labels = ["x"] * 70 + ["y"] * 20 + ["z"] * 10
    chosen = stratified_sample(labels, 30, np.random.default_rng(1))
    assert len(chosen) == len(set(chosen)) == 30 and chosen == sorted(chosen)
    assert Counter(labels[i] for i in chosen) == {"x": 21, "y": 6, "z": 3}


def test_the_validation_carve_is_seeded_stratified_and_disjoint_from_training():
    train, validation = carve_validation(LABELS, 0.2, seed=0)
    assert (train, validation) == carve_validation(LABELS, 0.2, seed=0)
    assert len(validation) == 96 and len(train) == 384
    assert sorted(train + validation) == list(range(len(LABELS)))
    assert Counter(LABELS[i] for i in validation) == {"a": 48, "b": 48}
    assert carve_validation(LABELS, 0.2, seed=1)[1] != validation


def test_folds_are_stratified_disjoint_and_cover_every_example_once():
    labels = ["a"] * 100 + ["b"] * 50 + ["c"] * 11
    fold_of = assign_folds(labels, 3, seed=0)
    assert fold_of == assign_folds(labels, 3, seed=0) and fold_of != assign_folds(labels, 3, seed=1)
    for label in "abc":
        per_fold = Counter(f for f, x in zip(fold_of, labels, strict=True) if x == label)
        assert max(per_fold.values()) - min(per_fold.values()) <= 1, (label, per_fold)
    assert sorted(Counter(fold_of).values()) == [53, 54, 54]  # 161 dealt in turn
    tested = []
    for fold in range(3):
        split = split_fold(fold_of, labels, fold, 0.2)
        assert not set(split.train) & set(split.validation) and not set(split.test) & set(
            split.train + split.validation
        )
        assert sorted(split.train + split.validation + split.test) == list(range(len(labels)))
        assert len(split.validation) == subset_size(len(labels) - len(split.test), 0.2)
        tested += split.test
    assert sorted(tested) == list(range(len(labels)))  # every example is a test example exactly once
    with pytest.raises(ValueError, match="at least 2 folds"):
        assign_folds(labels, 1, seed=0)


@pytest.mark.parametrize(
    ("examples", "full", "epochs", "batch", "expected"),
    [
        (256, 256, 8, 32, 8),  # the full set: its own epochs
        (128, 256, 8, 32, 16),  # half the batches: twice the epochs
        (26, 256, 8, 32, 64),  # one short batch per epoch: 64 updates
        (77, 256, 8, 32, 22),  # 3 batches per epoch: 66 updates, the fewest epochs reaching 64
        (1, 10, 3, 4, 9),  # 3 batches x 3 epochs over the full set, one batch per epoch on the subset
    ],
)
def test_a_subset_gets_at_least_the_updates_of_the_full_set(examples, full, epochs, batch, expected):
    assert epochs_for_subset(examples, full, epochs, batch) == expected
    updates = -(-examples // batch)
    assert (expected - 1) * updates < epochs * -(-full // batch) <= expected * updates


@pytest.mark.parametrize(
    ("examples", "full", "epochs", "batch"), [(0, 10, 1, 4), (11, 10, 1, 4), (5, 10, 0, 4), (5, 10, 1, 0)]
)
def test_epochs_for_an_impossible_subset_are_refused(examples, full, epochs, batch):
    with pytest.raises(ValueError):
        epochs_for_subset(examples, full, epochs, batch)


def test_the_corpus_loses_exactly_the_lines_that_hold_a_test_text():
    lines = ["alpha beta.", "", "gamma delta. epsilon.", "zeta", "gamma delta"]
    assert corpus_without(lines, ["gamma delta", "absent", ""]) == (["alpha beta.", "", "zeta"], 2)
    assert corpus_without(lines, []) == (lines, 0)


def test_subsets_are_exact_deterministic_per_seed_and_nested_across_fractions():
    labels = ["a", "b"] * 192
    for fraction in (0.1, 0.3, 0.5):
        for seed in range(3):
            chosen = subset_indices(labels, fraction, seed)
            assert chosen == subset_indices(labels, fraction, seed)  # the same for both arms: a pure function
            assert len(chosen) == len(set(chosen)) == subset_size(len(labels), fraction)
            counts = Counter(labels[i] for i in chosen)
            assert abs(counts["a"] - counts["b"]) <= 1
    assert subset_indices(labels, 0.1, 0) != subset_indices(labels, 0.1, 1)
    for seed in range(3):
        assert set(subset_indices(labels, 0.1, seed)) <= set(subset_indices(labels, 0.3, seed))
    assert subset_indices(labels, 1.0, 2) == list(range(384))


def test_the_plan_runs_both_arms_on_every_fraction_seed_and_learning_rate_and_registers_seed_0_at_100pct():
    runs = plan_runs((0.1, 0.3, 1.0), 3, (3e-4, 1e-3))
    assert len(runs) == 36 and len({r.name for r in runs}) == len({r.label for r in runs}) == 36
    assert Counter((r.fraction, r.seed) for r in runs) == {(f, s): 4 for f in (0.1, 0.3, 1.0) for s in range(3)}
    registered = [(r.arm, r.fraction, r.seed, r.learning_rate) for r in runs if r.registered]
    assert registered == [("pretrained", 1.0, 0, 3e-4), ("pretrained", 1.0, 0, 1e-3)]
    assert runs[0].name == "finetune-pretrained-10pct-lr0.0003-seed0"
    assert [r.seed for r in runs] == sorted(r.seed for r in runs)  # seed by seed
    with pytest.raises(ValueError, match="at least one seed"):
        plan_runs((1.0,), 0, (3e-4,))
    with pytest.raises(ValueError, match="learning rates must increase"):
        plan_runs((1.0,), 1, (1e-3, 3e-4))
    with pytest.raises(ValueError, match="positive"):
        plan_runs((1.0,), 1, ())


def test_demo_sizes_are_checked():
    assert SIZES["full"].finetune_fractions == (0.1, 0.3, 1.0) and SIZES["full"].finetune_seeds == 3
    assert SIZES["full"].finetune_learning_rates == (3e-4, 1e-3)
    assert SIZES["small"].finetune_seeds == 1 and SIZES["small"].finetune_fractions[-1] == 1.0
    fields = {**asdict(SIZES["small"]), "finetune_fractions": (0.5,)}
    with pytest.raises(ValueError, match=r"must include 1\.0"):
        DemoSize(**fields)
    with pytest.raises(ValueError, match="must increase"):
        DemoSize(**{**fields, "finetune_fractions": (1.0, 0.5)})
    with pytest.raises(ValueError, match="learning rates"):
        DemoSize(**{**asdict(SIZES["small"]), "finetune_learning_rates": ()})


def test_task_files_and_commands_give_both_arms_the_same_examples(tmp_path):
    layout = DemoLayout(tmp_path)
    size = SIZES["full"]
    files = write_task_files(layout, size)
    source = [line for line in CLASSIFY_TRAIN.read_text(encoding="utf-8").splitlines() if line.strip()]
    tests = []
    for fold in range(FOLDS):
        train, validation, test = (
            path.read_text(encoding="utf-8").splitlines()
            for path in (layout.task_train(fold), layout.task_validation(fold), layout.task_test(fold))
        )
        assert (len(train), len(validation), len(test)) == (256, 64, 160)
        assert [(len(s.train), len(s.validation), len(s.test)) for s in files.folds][fold] == (256, 64, 160)
        assert Counter(train + validation + test) == Counter(source)
        assert not set(train) & set(validation) and not set(test) & set(train + validation)
        assert Counter(json.loads(line)["label"] for line in test) == {"c-api": 80, "tutorial": 80}
        assert Counter(json.loads(line)["label"] for line in validation) == {"c-api": 32, "tutorial": 32}
        tests += test
    assert Counter(tests) == Counter(source)  # the folds' tests together are the labelled file
    assert files.subsets == {(f, s): n for f, n in ((0.1, 26), (0.3, 77), (1.0, 256)) for s in range(3)}

    # The pretraining corpus: the bundled one less each line that holds a labelled paragraph, and only those.
    original = CORPUS.read_text(encoding="utf-8").splitlines()
    pretrained_on = layout.corpus.read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in source]
    assert (
        len(source) // 2 < files.corpus_lines_dropped <= len(source)
        and len(pretrained_on) == len(original) - files.corpus_lines_dropped
    )
    assert not any(text in line for line in pretrained_on for text in texts)

    steps = demo_steps(layout, size)
    assert [s.name for s in steps[:3]] == ["vocabulary", "preprocess", "pretrain"]
    assert option(steps[0].command, "--input") == option(steps[1].command, "--input") == str(layout.corpus)
    tuning = [s for s in steps if s.run is not None]
    assert len(tuning) == 36
    by_pair: dict[tuple[float, int], dict[str, list[str]]] = {}
    for step in tuning:
        command, run = step.command, step.run
        fold = fold_of_seed(run.seed)
        by_pair.setdefault((run.fraction, run.seed), {})[run.arm] = command
        assert option(command, "--learning-rate") == str(run.learning_rate)
        assert option(command, "--validation") == str(layout.task_validation(fold))
        assert option(command, "--test") == str(layout.task_test(fold))
        assert option(command, "--seed") == str(run.seed)
        examples = subset_size(256, run.fraction)
        epochs = {26: 64, 77: 22, 256: 8}[examples]  # 64 updates of 32 examples each (the last one short)
        assert option(command, "--epochs") == str(epochs)
        assert option(command, "--tracking-uri") == layout.tracking_uri
        assert option(command, "--output") == str(layout.finetune_run(run))
        assert ("--from-scratch" in command) == (run.arm == "scratch")
        assert ("--no-register" in command) == (not run.registered)
        assert step.total_steps == epochs * -(-examples // 32) >= size.finetune_epochs * 256 // 32
        with open(option(command, "--train"), encoding="utf-8") as handle:
            trained_on = handle.read().splitlines()
        train = layout.task_train(fold).read_text(encoding="utf-8").splitlines()
        assert len(trained_on) == examples and set(trained_on) <= set(train)
    for (fraction, seed), arms in by_pair.items():
        assert option(arms["pretrained"], "--train") == option(arms["scratch"], "--train")
        assert (option(arms["pretrained"], "--train") == str(layout.task_train(seed % FOLDS))) == (fraction == 1.0)
    assert len({option(a["scratch"], "--train") for (f, _), a in by_pair.items() if f == 0.1}) == 3  # per seed


def test_spread_is_the_mean_and_sample_std():
    assert spread([0.5, 0.7, 0.6]) == Spread(pytest.approx(0.6), pytest.approx(0.1), 3)
    assert spread([0.75]) == Spread(0.75, None, 1)
    with pytest.raises(ValueError):
        spread([])


def results(table: dict[float, list[tuple[float, float]]], learning_rate: float = 3e-4) -> list[RunResult]:
    """{fraction: [(pretrained, scratch) per seed]} as RunResults at one learning rate, each with a validation
    accuracy equal to its test accuracy."""
    out = []
    for fraction, pairs in table.items():
        for seed, pair in enumerate(pairs):
            out += [
                RunResult(arm, fraction, seed, learning_rate, accuracy, accuracy)
                for arm, accuracy in zip(ARMS, pair, strict=True)
            ]
    return out


def test_each_arm_is_compared_at_the_learning_rate_its_validation_accuracy_prefers():
    """Random weights do best at the higher rate, the pretrained model at the lower one: each arm is scored at
    its own choice, made on validation alone (the test accuracies would choose otherwise for the scratch arm)."""

    def run(arm: str, seed: int, rate: float, validation: float, test: float) -> RunResult:
        return RunResult(arm, 1.0, seed, rate, validation, test)

    runs = [
        run("pretrained", 0, 3e-4, 0.90, 0.82),
        run("pretrained", 1, 3e-4, 0.88, 0.84),
        run("pretrained", 0, 1e-3, 0.85, 0.90),
        run("pretrained", 1, 1e-3, 0.86, 0.90),
        run("scratch", 0, 3e-4, 0.80, 0.95),
        run("scratch", 1, 3e-4, 0.84, 0.95),
        run("scratch", 0, 1e-3, 0.91, 0.88),
        run("scratch", 1, 1e-3, 0.89, 0.86),
    ]
    assert choose_learning_rates(runs) == {("pretrained", 1.0): 3e-4, ("scratch", 1.0): 1e-3}
    (comparison,) = compare(runs, {1.0: 307})
    assert comparison.learning_rates == {"pretrained": 3e-4, "scratch": 1e-3}
    assert comparison.pretrained.mean == pytest.approx(0.83) and comparison.scratch.mean == pytest.approx(0.87)
    assert comparison.gap_points.mean == pytest.approx(-4.0)
    # a tie in mean validation accuracy goes to the smaller rate
    tied = [run("scratch", 0, 1e-3, 0.9, 0.9), run("scratch", 0, 3e-4, 0.9, 0.8)]
    assert choose_learning_rates(tied) == {("scratch", 1.0): 3e-4}
    with pytest.raises(ValueError, match="different seeds"):
        choose_learning_rates([run("scratch", 0, 3e-4, 0.9, 0.9), run("scratch", 1, 1e-3, 0.9, 0.9)])
    with pytest.raises(ValueError, match="two results"):
        choose_learning_rates([run("scratch", 0, 3e-4, 0.9, 0.9)] * 2)


def test_the_gap_is_the_mean_and_std_of_the_per_seed_differences():
    table = {1.0: [(0.80, 0.78), (0.70, 0.67), (0.75, 0.725)], 0.1: [(0.70, 0.50), (0.72, 0.55), (0.69, 0.52)]}
    comparisons = compare(results(table), {0.1: 38, 1.0: 384})
    assert [c.fraction for c in comparisons] == [0.1, 1.0] and comparisons[0].train_examples == 38
    for c in comparisons:
        pretrained, scratch = zip(*table[c.fraction], strict=True)
        differences = [100 * (p - s) for p, s in table[c.fraction]]
        assert c.pretrained.mean == pytest.approx(statistics.mean(pretrained))
        assert c.scratch.std == pytest.approx(statistics.stdev(scratch))
        assert c.gap_points.mean == pytest.approx(100 * (c.pretrained.mean - c.scratch.mean))
        assert c.gap_points.std == pytest.approx(statistics.stdev(differences))
        assert c.gap_points.n == 3
    # Paired: the pretrained run leads by 2 to 3 points on every seed, so the gap is clear even though each
    # arm's own spread (5 points) is larger than the gap.
    low, high = comparisons
    assert low.clear and high.clear
    assert high.pretrained.std > high.gap_points.mean / 100


def test_clear_means_more_than_twice_the_std_in_either_direction():
    comparisons = compare(
        results({0.1: [(0.6, 0.5), (0.5, 0.6)], 0.3: [(0.5, 0.6), (0.5, 0.61)], 1.0: [(0.7, 0.7), (0.7, 0.7)]}),
        {0.1: 38, 0.3: 115, 1.0: 384},
    )
    assert [c.clear for c in comparisons] == [False, True, False]  # 0 ± 14.1; -10.5 ± 0.7; 0 ± 0
    line = verdict(comparisons)
    assert line.startswith("Verdict (test accuracy, pretrained minus random weights, over 2 seeds): ")
    assert "no clear difference at 10% (38 examples): +0.0 ± 14.1 points" in line
    assert "pretraining hurts at 30% (115 examples): -10.5 ± 0.7 points" in line
    helped = verdict(compare(results({1.0: [(0.8, 0.7), (0.82, 0.7)]}), {1.0: 384}))
    assert "pretraining helps at 100% (384 examples): +11.0 ± 1.4 points" in helped


def test_one_seed_has_no_spread_and_the_verdict_says_so():
    (comparison,) = compare(results({1.0: [(0.8, 0.75)]}), {1.0: 384})
    assert comparison.gap_points == Spread(pytest.approx(5.0), None, 1) and comparison.clear is None
    line = verdict([comparison])
    assert "one seed" in line and "no spread to judge it by" in line and "--finetune-seeds 3" in line


def test_unpaired_or_repeated_results_are_refused():
    with pytest.raises(ValueError, match="different seeds"):
        compare([RunResult("pretrained", 1.0, 0, 3e-4, 0.8, 0.8)], {1.0: 384})
    with pytest.raises(ValueError, match="two results"):
        compare(results({1.0: [(0.8, 0.7)]}) * 2, {1.0: 384})
    with pytest.raises(ValueError, match="unknown arm"):
        compare([RunResult("warm", 1.0, 0, 3e-4, 0.8, 0.8)], {1.0: 384})


def test_percent_names_fractions():
    assert [percent(f) for f in (0.1, 0.3, 1.0, 0.125)] == ["10", "30", "100", "12.5"]


HELD_OUT = {
    "step": 900,
    "eval_mlm_loss": 5.7,
    "eval_mlm_accuracy": 0.139,
    "eval_mask_loss": 5.2,
    "eval_mask_accuracy": 0.12,
    "eval_mask_unigram_loss": 6.1,
    "eval_mask_gain": 0.9,
    "eval_keep_accuracy": 0.85,
    "eval_random_accuracy": 0.02,
    "eval_nsp_accuracy": 0.595,
    "eval_nsp_majority": 0.525,
    "eval_masked_tokens": 12353,
    "eval_mask_tokens": 9880,
    "eval_sequences": 766,
}


def test_progress_line_figures_for_a_pretraining_evaluation():
    assert held_out_figures(HELD_OUT) == (
        "[MASK] loss 5.200 (unigram guess 6.100, gain 0.900 nats), [MASK] accuracy 0.120, "
        "NSP accuracy 0.595 (majority 0.525)"
    )


def synthetic_summary(layout: DemoLayout, table: dict[float, list[tuple[float, float]]]) -> dict:
    """What collect() returns, for figures chosen here."""
    sizes = {0.1: 38, 0.3: 115, 0.5: 192, 1.0: 384}
    comparisons = compare(results(table), sizes)
    runs = [
        {
            "arm": r.arm,
            "fraction": r.fraction,
            "seed": r.seed,
            "learning_rate": r.learning_rate,
            "train_examples": sizes[r.fraction],
            "test_accuracy": r.test_accuracy,
            "test_macro_f1": r.test_accuracy - 0.01,
            "validation_accuracy": 0.7,
            "best_epoch": 2,
            "validation_accuracy_by_epoch": [0.5, 0.7, 0.65],
            "model": f"/x/{r.arm}/model",
            "registered": "models:/bert-demo-classify/1 (champion)" if r.arm == "pretrained" else None,
            "output": "/x",
        }
        for r in results(table)
    ]
    registered = next(r for r in runs if r["arm"] == "pretrained" and r["fraction"] == 1.0 and r["seed"] == 0)
    return {
        "corpus": {"path": "corpus.txt", "bytes": 2_100_000, "documents": 1826},
        "dataset": {"path": "d", "train_sequences": 40000, "validation_sequences": 766, "shards": 5},
        "pretraining": {
            "steps": 900,
            "held_out": HELD_OUT,
            "champion": {"name": "bert-demo", "version": 3, "step": 900},
        },
        "finetuning": {
            "task": "classify: tutorial or c-api paragraph",
            "epochs": 3,
            "examples": {"labelled": 480, "folds": 3, "train": [256] * 3, "validation": [64] * 3, "test": [160] * 3},
            "validation_fraction": 0.2,
            "test_majority_share": 0.5,
            "fractions": sorted(table),
            "seeds": list(range(len(next(iter(table.values()))))),
            "learning_rates": [3e-4],
            "by_fraction": [comparison_figures(c) for c in comparisons],
            "verdict": verdict(comparisons),
            "registered_run": registered,
            "runs": runs,
        },
        "registry": {
            "bert-demo": {"versions": [{"version": v, "tags": {}} for v in (1, 2, 3)], "aliases": {"champion": 3}},
            "bert-demo-classify": {"versions": [{"version": 1, "tags": {}}], "aliases": {"champion": 1}},
        },
        "artefacts": {
            key: f"/demo/{key}"
            for key in (
                "tokenizer",
                "dataset",
                "pretraining_run",
                "exported_champion",
                "task_files",
                "finetuning_runs",
                "registered_classifier",
                "mlflow_store",
                "loss_curves",
                "logs",
            )
        },
        "mlflow_ui": "mlflow ui --backend-store-uri sqlite:///x --port 5000",
        "mlflow_pages": {
            "pretraining runs": "http://127.0.0.1:5000/#/experiments/1/runs",
            "registered model bert-demo": "http://127.0.0.1:5000/#/models/bert-demo",
        },
        "timings_s": {
            "vocabulary": 2.0,
            "preprocess": 5.0,
            "pretrain": 337.0,
            **{r.name: 10.0 + i for i, r in enumerate(plan_runs(sorted(table), 3, (3e-4,)))},
        },
    }


def test_the_report_shows_the_figures_of_summary_json_and_draws_four_panels(tmp_path):
    layout = DemoLayout(tmp_path)
    table = {
        0.1: [(0.70, 0.50), (0.72, 0.55), (0.69, 0.52)],
        0.3: [(0.74, 0.66), (0.73, 0.70), (0.75, 0.64)],
        1.0: [(0.80, 0.78), (0.76, 0.79), (0.78, 0.77)],
    }
    summary = json.loads(json.dumps(synthetic_summary(layout, table)))  # as summary.json holds it
    text = summary_table(summary)
    lines = text.splitlines()
    assert "| **gain over the unigram guess at [MASK] positions, nats** | **0.900** | 0 |" in lines
    assert "| loss at [MASK] positions (9,880 tokens) | 5.200 | 6.100 (unigram guess) |" in lines
    assert "| accuracy at kept-token positions (the input shows the answer: copyable) | 0.850 | |" in lines
    assert "| next-sentence accuracy (766 pairs) | 0.595 | 0.525 (majority share) |" in lines
    assert any(line.startswith("| accuracy at all predicted positions") and "| 0.139 |" in line for line in lines)
    assert not any("masked-LM accuracy" in line for line in lines)
    for row in summary["finetuning"]["by_fraction"]:
        cells = next(line for line in lines if line.startswith(f"| {percent(row['fraction'])}% (")).split(" | ")
        pretrained, scratch, gap = (row[k] for k in ("pretrained", "scratch", "gap_points"))
        assert cells[1] == f"{pretrained['mean']:.3f} ± {pretrained['std']:.3f}"
        assert cells[2] == f"{scratch['mean']:.3f} ± {scratch['std']:.3f}"
        assert cells[3] == f"{gap['mean']:+.1f} ± {gap['std']:.1f} |"
        assert gap["mean"] == pytest.approx(100 * (pretrained["mean"] - scratch["mean"]))
    assert summary["finetuning"]["verdict"] in lines
    assert "pretraining helps at 10%" in summary["finetuning"]["verdict"]
    assert "no clear difference at 100%" in summary["finetuning"]["verdict"]
    assert "| majority class | 0.500 | 0.500 | |" in lines
    times = "Step times: vocabulary 2 s, preprocess 5 s, pretrain 5 min 37 s, 18 fine-tuning runs 5 min 33 s"
    assert times + " (10 s-27 s each); in all 11 min 17 s." in text
    assert "- pretraining runs: http://127.0.0.1:5000/#/experiments/1/runs" in lines
    assert "- registered model bert-demo: http://127.0.0.1:5000/#/models/bert-demo" in lines

    layout.pretrain.mkdir(parents=True)
    records = [{"step": s, "loss": 7.0 - s / 300, "mlm_loss": 6.5 - s / 300, "nsp_loss": 0.69} for s in (100, 300)]
    records.append({**HELD_OUT, "step": 300})
    (layout.pretrain / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    png = plot_loss_curves(layout, summary).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (2000, 450)


def test_the_report_with_one_seed_shows_no_spread(tmp_path):
    summary = json.loads(json.dumps(synthetic_summary(DemoLayout(tmp_path), {0.5: [(0.7, 0.6)], 1.0: [(0.8, 0.7)]})))
    lines = summary_table(summary).splitlines()
    row = next(line for line in lines if line.startswith("| 100% (384) |"))
    assert row == "| 100% (384) | 0.800 | 0.700 | +10.0 |"
    assert any("one seed" in line for line in lines)


def test_the_loss_axis_shows_the_trend_and_lets_the_initial_fall_run_off():
    training = [9.0] + [6.0 - i / 100 for i in range(99)]  # a steep first record, then a slow fall
    low, high = trend_limits(training, [5.5, 6.2])
    assert (low, high) == pytest.approx((5.02 - 0.059, 6.2 + 0.059))  # range 1.18, 5% margins; 9.0 left out
    assert trend_limits([], []) == (0.0, 1.0)
    assert trend_limits([4.0], [4.0]) == (3.5, 4.5)  # a flat line still gets an axis


def test_the_report_links_the_mlflow_pages_of_the_runs_and_models(tmp_path):
    from mlflow import MlflowClient

    from pipeline.handoff.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING, RunTracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = RunTracker(uri, artifact_location=str(tmp_path / "artifacts"), system_metrics_interval_s=None)
    assert tracker.start("bert-pretraining", None, "run", {}, wait_s=30.0)
    tracker.finish("FINISHED")
    experiment = MlflowClient(uri).get_experiment_by_name("bert-pretraining")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING  # MLflow's UI shows it as training runs
    pages = mlflow_pages(uri, "http://host:5000")
    assert pages["pretraining runs"] == f"http://host:5000/#/experiments/{experiment.experiment_id}/runs"
    assert "fine-tuning runs" not in pages  # no such experiment in this store
    assert pages["registered model bert-demo"] == "http://host:5000/#/models/bert-demo"


def test_the_report_names_each_arms_chosen_learning_rate_when_there_was_a_choice(tmp_path):
    summary = synthetic_summary(DemoLayout(tmp_path), {1.0: [(0.8, 0.7), (0.82, 0.72)]})
    summary["finetuning"]["learning_rates"] = [3e-4, 1e-3]
    summary["finetuning"]["by_fraction"][0]["learning_rates"] = {"pretrained": 3e-4, "scratch": 1e-3}
    lines = summary_table(json.loads(json.dumps(summary))).splitlines()
    assert "| 100% (384) | 0.810 ± 0.014 (lr 0.0003) | 0.710 ± 0.014 (lr 0.001) | +10.0 ± 0.0 |" in lines
    assert any(
        "the learning rate (of 0.0003, 0.001; the mean validation accuracy over seeds decides" in line for line in lines
    )
