"""The demo's closing report, read from what its steps wrote: the figures as JSON, a table, and a PNG of the
loss curves and of test accuracy against the amount of labelled data."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.data.dataset_check import load_manifest
from pipeline.demo.downstream import (
    ARMS,
    Comparison,
    FinetuneRun,
    RunResult,
    Spread,
    compare,
    majority_share,
    percent,
    signed_points,
    verdict,
)
from pipeline.demo.layout import (
    CLASSIFIER_MODEL,
    CLASSIFY_TRAIN,
    CORPUS,
    FOLDS,
    REGISTERED_MODEL,
    VALIDATION_FRACTION,
    DemoLayout,
    fold_of_seed,
)
from pipeline.handoff.registry import CHAMPION, TAG_PREFIX
from pipeline.training.metrics import read_json_lines

TASK = "classify: tutorial or c-api paragraph"
# The demo's runs go to the default experiments of pretraining (train.json) and fine-tuning.
PRETRAINING_EXPERIMENT = "bert-pretraining"
FINETUNING_EXPERIMENT = "bert-finetuning"
MLFLOW_UI = "http://127.0.0.1:5000"
ARM_TITLES = {"pretrained": "from the pretrained model", "scratch": "from random weights"}


def read_labels(path: Path) -> list[str]:
    return [json.loads(line)["label"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def registry_state(tracking_uri: str, names: Iterable[str]) -> dict[str, Any]:
    """For each registered model: its versions (with the step or metric they were tagged with) and aliases."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    state = {}
    for name in names:
        model = client.get_registered_model(name)
        versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
        state[name] = {
            "versions": [
                {"version": int(v.version), "tags": {k.removeprefix(TAG_PREFIX): t for k, t in v.tags.items()}}
                for v in versions
            ],
            "aliases": {alias: int(version) for alias, version in model.aliases.items()},
        }
    return state


def collect(layout: DemoLayout, runs: Sequence[FinetuneRun], timings: dict[str, float], epochs: int) -> dict[str, Any]:
    """Every figure of the report, from the files the steps wrote and the MLflow registry."""
    manifest = load_manifest(layout.dataset)
    pretraining = read_json_lines(layout.pretrain / "metrics.jsonl")
    evaluations = [r for r in pretraining if "eval_mask_gain" in r]
    if not evaluations:
        raise ValueError(f"{layout.pretrain / 'metrics.jsonl'} holds no evaluation")
    registry = registry_state(layout.tracking_uri, [REGISTERED_MODEL, CLASSIFIER_MODEL])
    champion = registry[REGISTERED_MODEL]["aliases"][CHAMPION]
    champion_tags = next(v["tags"] for v in registry[REGISTERED_MODEL]["versions"] if v["version"] == champion)
    finished = [run_figures(layout, run) for run in runs]
    train_examples = {figures["fraction"]: figures["train_examples"] for figures in finished}
    results = [
        RunResult(f["arm"], f["fraction"], f["seed"], f["learning_rate"], f["validation_accuracy"], f["test_accuracy"])
        for f in finished
    ]
    comparisons = compare(results, train_examples)
    registered = registered_champion(finished, registry[CLASSIFIER_MODEL]["aliases"].get(CHAMPION))
    folds = sorted({fold_of_seed(run.seed) for run in runs})
    test_labels = [label for fold in folds for label in read_labels(layout.task_test(fold))]
    return {
        "corpus": {
            "path": str(CORPUS),
            "bytes": CORPUS.stat().st_size,
            "pretrained_on": str(layout.corpus),
            "pretrained_on_bytes": layout.corpus.stat().st_size,
            "documents": manifest.counters["documents"],
        },
        "dataset": {
            "path": str(layout.dataset),
            "train_sequences": manifest.splits["train"].samples,
            "validation_sequences": manifest.splits["validation"].samples,
            "shards": sum(len(split.shards) for split in manifest.splits.values()),
        },
        "pretraining": {
            "steps": max(r["step"] for r in pretraining),
            "held_out": evaluations[-1],
            "champion": {"name": REGISTERED_MODEL, "version": champion, "step": int(champion_tags["step"])},
        },
        "finetuning": {
            "task": TASK,
            "epochs": epochs,
            "examples": {  # per fold; seed s is tested on fold s % folds
                "labelled": len(read_labels(CLASSIFY_TRAIN)),
                "folds": FOLDS,
                "train": [len(read_labels(layout.task_train(fold))) for fold in range(FOLDS)],
                "validation": [len(read_labels(layout.task_validation(fold))) for fold in range(FOLDS)],
                "test": [len(read_labels(layout.task_test(fold))) for fold in range(FOLDS)],
            },
            "validation_fraction": VALIDATION_FRACTION,
            "test_majority_share": majority_share(test_labels),  # over the folds the runs were tested on
            "fractions": sorted(train_examples),
            "seeds": sorted({run.seed for run in runs}),
            "learning_rates": sorted({run.learning_rate for run in runs}),
            "by_fraction": [comparison_figures(c) for c in comparisons],
            "verdict": verdict(comparisons),
            "registered_run": registered,
            "runs": finished,
        },
        "registry": registry,
        "artefacts": {
            "tokenizer": str(layout.tokenizer),
            "dataset": str(layout.dataset),
            "pretraining_run": str(layout.pretrain),
            "exported_champion": str(layout.pretrain / "exports" / f"step{int(champion_tags['step']):08d}"),
            "task_files": str(layout.tasks),
            "finetuning_runs": str(layout.finetune),
            "registered_classifier": registered["model"],
            "mlflow_store": str(layout.mlflow),
            "loss_curves": str(layout.loss_curves),
            "logs": str(layout.logs),
        },
        "mlflow_ui": mlflow_ui_command(layout),
        "mlflow_pages": mlflow_pages(layout.tracking_uri, MLFLOW_UI),
        "timings_s": timings,
    }


def size_range(sizes: Sequence[int]) -> str:
    """'160', or '159-161' where the folds differ."""
    low, high = min(sizes), max(sizes)
    return f"{low}" if low == high else f"{low}-{high}"


def registered_champion(finished: Sequence[dict[str, Any]], champion: int | None) -> dict[str, Any]:
    """The figures of the run whose registered version is the classifier's champion (the registry's rule
    chose it on validation among the registered runs, one per learning rate)."""
    uri = f"models:/{CLASSIFIER_MODEL}/{champion}"
    found = [f for f in finished if f["registered"] and f["registered"].split(" ")[0] == uri]
    if not found:
        raise ValueError(f"no fine-tuning run registered {uri}, the champion of {CLASSIFIER_MODEL}")
    return found[0]


def run_figures(layout: DemoLayout, run: FinetuneRun) -> dict[str, Any]:
    """One fine-tuning run: its test figures (the epoch chosen on validation) and its curve."""
    directory = layout.finetune_run(run)
    summary = json.loads((directory / "finetune_summary.json").read_text(encoding="utf-8"))
    return {
        "arm": run.arm,
        "fraction": run.fraction,
        "seed": run.seed,
        "learning_rate": run.learning_rate,
        "train_examples": summary["counts"]["train_examples"],
        "test_accuracy": summary["test"]["accuracy"],
        "test_macro_f1": summary["test"]["macro_f1"],
        "validation_accuracy": summary["evaluation"]["accuracy"],
        "best_epoch": summary["best_epoch"],
        "validation_accuracy_by_epoch": epoch_accuracies(directory / "metrics.jsonl"),
        "model": summary["exported"],
        "registered": summary["registered"],
        "output": str(directory),
    }


def comparison_figures(comparison: Comparison) -> dict[str, Any]:
    return {
        "fraction": comparison.fraction,
        "train_examples": comparison.train_examples,
        **{arm: asdict(getattr(comparison, arm)) for arm in ARMS},
        "gap_points": asdict(comparison.gap_points),
        "learning_rates": comparison.learning_rates,
        "gap_exceeds_twice_std": comparison.clear,
    }


def epoch_accuracies(metrics: Path) -> list[float]:
    """Validation accuracy after each epoch of a fine-tuning run, in epoch order (the closing test record,
    which has `best_epoch` and no `epoch`, left out)."""
    records = [r for r in read_json_lines(metrics) if "eval_accuracy" in r and "epoch" in r]
    return [r["eval_accuracy"] for r in sorted(records, key=lambda r: r["epoch"])]


def mlflow_ui_command(layout: DemoLayout) -> str:
    mlflow = Path(sys.executable).parent / "mlflow"
    executable = str(mlflow) if mlflow.is_file() else "mlflow"
    return f"{executable} ui --backend-store-uri {layout.tracking_uri} --port {MLFLOW_UI.rsplit(':', 1)[1]}"


def mlflow_pages(tracking_uri: str, ui: str) -> dict[str, str]:
    """Where the demo's runs and models are in the MLflow UI at `ui`: each experiment's runs table and each
    registered model's page (MLflow's own landing page leads elsewhere)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    pages = {}
    for title, name in (("pretraining runs", PRETRAINING_EXPERIMENT), ("fine-tuning runs", FINETUNING_EXPERIMENT)):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            pages[title] = f"{ui}/#/experiments/{experiment.experiment_id}/runs"
    for name in (REGISTERED_MODEL, CLASSIFIER_MODEL):
        pages[f"registered model {name}"] = f"{ui}/#/models/{name}"
    return pages


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def accuracy_cell(figures: dict[str, Any]) -> str:
    """A Spread's figures as '0.656 ± 0.021', or '0.656' from one seed."""
    text = f"{figures['mean']:.3f}"
    return text if figures["std"] is None else f"{text} ± {figures['std']:.3f}"


def gap_cell(figures: dict[str, Any]) -> str:
    return signed_points(Spread(**figures))


def step_times(timings: dict[str, float]) -> str:
    """The pipeline's steps one by one, the fine-tuning runs together."""
    tuning = [seconds for name, seconds in timings.items() if name.startswith("finetune-")]
    parts = [f"{name} {_duration(s)}" for name, s in timings.items() if not name.startswith("finetune-")]
    if tuning:
        each = f"{_duration(min(tuning))}-{_duration(max(tuning))} each" if len(tuning) > 1 else "one run"
        parts.append(f"{len(tuning)} fine-tuning runs {_duration(sum(tuning))} ({each})")
    return "Step times: " + ", ".join(parts) + f"; in all {_duration(sum(timings.values()))}."


def pretraining_lines(summary: dict[str, Any]) -> list[str]:
    held_out, dataset = summary["pretraining"]["held_out"], summary["dataset"]
    return [
        f"Pretraining, held out at step {held_out['step']} ({held_out['eval_sequences']:,} sequences the model "
        f"never trained on). The headline is the gain at [MASK] positions over the best context-free guess (the "
        f"training tokens' unigram frequencies) at the same positions: above 0, the model uses the context.",
        "",
        f"| held-out pretraining evaluation (step {held_out['step']}) | model | context-free baseline |",
        "|---|---:|---:|",
        f"| **gain over the unigram guess at [MASK] positions, nats** | **{held_out['eval_mask_gain']:.3f}** | 0 |",
        f"| loss at [MASK] positions ({held_out['eval_mask_tokens']:,} tokens) | {held_out['eval_mask_loss']:.3f} | "
        f"{held_out['eval_mask_unigram_loss']:.3f} (unigram guess) |",
        f"| accuracy at [MASK] positions | {held_out['eval_mask_accuracy']:.3f} | |",
        f"| accuracy at kept-token positions (the input shows the answer: copyable) | "
        f"{held_out['eval_keep_accuracy']:.3f} | |",
        f"| accuracy at random-token positions | {held_out['eval_random_accuracy']:.3f} | |",
        f"| next-sentence accuracy ({held_out['eval_sequences']:,} pairs) | {held_out['eval_nsp_accuracy']:.3f} | "
        f"{held_out['eval_nsp_majority']:.3f} (majority share) |",
        f"| accuracy at all predicted positions ([MASK], kept and random: {held_out['eval_masked_tokens']:,}) | "
        f"{held_out['eval_mlm_accuracy']:.3f} | |",
        "",
        f"({dataset['train_sequences']:,} training sequences; the step's training metrics are in "
        f"`{summary['artefacts']['pretraining_run']}/metrics.jsonl`.)",
    ]


def finetuning_lines(summary: dict[str, Any]) -> list[str]:
    tune, champion = summary["finetuning"], summary["pretraining"]["champion"]
    examples, seeds = tune["examples"], len(tune["seeds"])
    spread_note = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
    registered = tune["registered_run"]
    epochs = (
        f"{tune['epochs']} epoch{'s' if tune['epochs'] > 1 else ''} (over all the training examples; a smaller "
        "subset is read more often, to as many updates)"
    )
    rates = tune["learning_rates"]
    if len(rates) > 1:
        choice = (
            f"the best of {epochs} and, for each arm and amount of data, the learning rate (of "
            f"{', '.join(f'{r:g}' for r in rates)}; the mean validation accuracy over seeds decides, shown in "
            "brackets)"
        )
    else:
        choice = f"the best of {epochs} (learning rate {rates[0]:g})"
    folds = examples["folds"]
    lines = [
        f"Fine-tuning ({tune['task']}): {examples['labelled']} labelled paragraphs dealt into {folds} folds (by "
        f"label); seed s tests on fold s % {folds} ({size_range(examples['test'])} paragraphs, scored once per run), "
        f"and {size_range(examples['validation'])} of the other folds ({percent(tune['validation_fraction'])}%) "
        f"choose {choice}; the other {size_range(examples['train'])} are for training. No labelled paragraph is in "
        f"the pretraining corpus. Test accuracy, {spread_note}; both columns of a row train on the same examples "
        "and are tested on the same fold.",
        "",
        f"| labelled training examples | from `models:/{champion['name']}@champion` (version {champion['version']}, "
        f"step {champion['step']}) | from random weights | gap, accuracy points |",
        "|---|---:|---:|---:|",
    ]
    for row in tune["by_fraction"]:
        pretrained, scratch = (
            accuracy_cell(row[arm]) + (f" (lr {row['learning_rates'][arm]:g})" if len(rates) > 1 else "")
            for arm in ARMS
        )
        lines.append(
            f"| {percent(row['fraction'])}% ({row['train_examples']}) | {pretrained} | {scratch} | "
            f"{gap_cell(row['gap_points'])} |"
        )
    lines += [
        f"| majority class | {tune['test_majority_share']:.3f} | {tune['test_majority_share']:.3f} | |",
        "",
        tune["verdict"],
        "",
        f"The champion of `{CLASSIFIER_MODEL}` (100%, seed {registered['seed']}, learning rate "
        f"{registered['learning_rate']:g}, from the pretrained model; of the runs registered, the best on "
        f"validation): test accuracy {registered['test_accuracy']:.3f}, macro-F1 {registered['test_macro_f1']:.3f}, "
        f"epoch {registered['best_epoch']} chosen on validation ({registered['validation_accuracy']:.3f}).",
    ]
    return lines


def summary_table(summary: dict[str, Any]) -> str:
    """The report as Markdown: held-out pretraining figures, fine-tuning pretrained against random weights at
    each amount of labelled data, artefacts."""
    corpus, dataset, champion = summary["corpus"], summary["dataset"], summary["pretraining"]["champion"]
    registry, artefacts = summary["registry"], summary["artefacts"]
    classifier_aliases = registry[CLASSIFIER_MODEL]["aliases"]
    lines = [
        "# bertpipe demo",
        "",
        f"Corpus `{corpus['path']}`: {corpus['bytes'] / 1e6:.1f} MB, {corpus['documents']:,} documents -> "
        f"{dataset['train_sequences']:,} training and {dataset['validation_sequences']:,} held-out sequences "
        f"(max 128 tokens) in {dataset['shards']} shards.",
        "",
        *pretraining_lines(summary),
        "",
        *finetuning_lines(summary),
        "",
        "| artefact | where |",
        "|---|---|",
        f"| WordPiece vocabulary | `{artefacts['tokenizer']}` |",
        f"| shards, manifest.json | `{artefacts['dataset']}` |",
        f"| pretraining run: checkpoints, metrics.jsonl | `{artefacts['pretraining_run']}` |",
        f"| champion exported for Hugging Face | `{artefacts['exported_champion']}` |",
        f"| registered pretrained model | `models:/{REGISTERED_MODEL}@champion` = version {champion['version']} of "
        f"{len(registry[REGISTERED_MODEL]['versions'])} |",
        f"| the task's folds: test, validation, training and subset files | `{artefacts['task_files']}` |",
        f"| fine-tuning runs (`<arm>-<percent>pct-lr<rate>-seed<seed>`) | `{artefacts['finetuning_runs']}` |",
        f"| registered classifier | `models:/{CLASSIFIER_MODEL}@champion` = version "
        f"{classifier_aliases.get(CHAMPION, '-')}, `{artefacts['registered_classifier']}` |",
        f"| MLflow store (runs, metrics, models) | `{artefacts['mlflow_store']}` |",
        f"| loss and accuracy curves | `{artefacts['loss_curves']}` |",
        f"| each step's log | `{artefacts['logs']}` |",
        "",
        step_times(summary["timings_s"]),
        "",
        f"MLflow UI: `{summary['mlflow_ui']}`, then open",
        "",
        *(f"- {title}: {url}" for title, url in summary["mlflow_pages"].items()),
        "",
    ]
    return "\n".join(lines)


def trend_limits(
    training: Sequence[float], others: Sequence[float], start_share: float = 0.05, margin: float = 0.05
) -> tuple[float, float]:
    """y-limits that show how a loss moves: every held-out point and the training curve after its first
    `start_share` of records (the steep fall from the initial loss, which would squeeze the rest flat, may run
    off the top), with `margin` of the range added on each side."""
    shown = list(training[int(len(training) * start_share) :]) + list(others)
    if not shown:
        return 0.0, 1.0
    low, high = min(shown), max(shown)
    pad = (high - low) * margin or 0.5
    return low - pad, high + pad


def plot_loss_curves(layout: DemoLayout, summary: dict[str, Any]) -> Path:
    """Four panels: the pretraining MLM loss with the held-out [MASK] loss against the unigram guess there; the
    held-out [MASK] and next-sentence accuracy against the next-sentence majority; test accuracy against the
    fraction of labelled data, both arms, with their std over seeds; validation accuracy per epoch of the runs
    on every training example."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, NullLocator

    pretraining = read_json_lines(layout.pretrain / "metrics.jsonl")
    train = [r for r in pretraining if "loss" in r]
    held_out = [r for r in pretraining if "eval_mask_gain" in r]
    tune = summary["finetuning"]
    colours = {"pretrained": "tab:blue", "scratch": "tab:orange"}

    figure, (pre_axes, accuracy_axes, data_axes, epoch_axes) = plt.subplots(1, 4, figsize=(20, 4.5), dpi=100)
    training_steps, training_losses = [r["step"] for r in train], [r["mlm_loss"] for r in train]
    pre_axes.plot(training_steps, training_losses, label="MLM loss (training)")
    eval_steps = [r["step"] for r in held_out]
    held_out_losses = [r["eval_mask_loss"] for r in held_out]
    unigram_losses = [r["eval_mask_unigram_loss"] for r in held_out]
    pre_axes.plot(eval_steps, held_out_losses, "o-", label="[MASK] loss (held out)")
    pre_axes.plot(eval_steps, unigram_losses, "s--", color="grey", label="unigram guess at the same [MASK] positions")
    pre_axes.set_ylim(*trend_limits(training_losses, held_out_losses + unigram_losses))
    pre_axes.set(title="Pretraining: MLM loss", xlabel="step", ylabel="loss (nats)")

    accuracy_axes.plot(eval_steps, [r["eval_mask_accuracy"] for r in held_out], "o-", label="[MASK] accuracy")
    accuracy_axes.plot(eval_steps, [r["eval_nsp_accuracy"] for r in held_out], "o-", label="next-sentence accuracy")
    accuracy_axes.plot(
        eval_steps, [r["eval_nsp_majority"] for r in held_out], ":", color="grey", label="next-sentence majority"
    )
    accuracy_axes.set(title="Pretraining: held-out accuracy", xlabel="step", ylabel="accuracy")

    rows = tune["by_fraction"]
    fractions = [row["fraction"] for row in rows]
    for offset, arm in zip((0.97, 1.03), ARMS, strict=True):
        data_axes.errorbar(
            [f * offset for f in fractions],
            [row[arm]["mean"] for row in rows],
            yerr=[row[arm]["std"] or 0.0 for row in rows],
            fmt="o-",
            capsize=4,
            color=colours[arm],
            label=ARM_TITLES[arm],
        )
    data_axes.axhline(tune["test_majority_share"], color="grey", linestyle=":", label="majority class")
    data_axes.set_xscale("log")
    data_axes.xaxis.set_minor_locator(NullLocator())
    data_axes.set_xticks(fractions, [f"{percent(row['fraction'])}%\n({row['train_examples']})" for row in rows])
    seeds = len(tune["seeds"])
    data_axes.set(
        title=f"Fine-tuning: test accuracy ({seeds} seed{'s' if seeds > 1 else ''}, ± std)",
        xlabel="labelled training examples",
        ylabel="accuracy",
    )

    for arm in ARMS:
        curves = [r["validation_accuracy_by_epoch"] for r in tune["runs"] if r["arm"] == arm and r["fraction"] == 1.0]
        for index, curve in enumerate(curves):
            epoch_axes.plot(
                range(1, len(curve) + 1),
                curve,
                "o-",
                color=colours[arm],
                alpha=1.0 if len(curves) == 1 else 0.6,
                label=ARM_TITLES[arm] if index == 0 else None,
            )
    epoch_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    epoch_axes.set(title="Fine-tuning on 100%: validation accuracy per epoch", xlabel="epoch", ylabel="accuracy")
    for axes in (pre_axes, accuracy_axes, data_axes, epoch_axes):
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.tight_layout()
    layout.loss_curves.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(layout.loss_curves)
    plt.close(figure)
    return layout.loss_curves
