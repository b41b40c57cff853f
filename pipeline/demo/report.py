"""The demo's closing report, read from what its steps wrote: the figures as JSON, a table, and a PNG of the
loss curves."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.demo.layout import (
    CLASSIFIER_MODEL,
    CLASSIFY_VALIDATION,
    CORPUS,
    REGISTERED_MODEL,
    DemoLayout,
)
from pipeline.metrics import read_json_lines
from pipeline.registry import CHAMPION, TAG_PREFIX
from pipeline.shard_reader import read_shard_members
from preprocessing.shards import decode_sample


def majority_share(labels: Iterable[Hashable]) -> float:
    """The accuracy of always answering the most frequent label."""
    counts = Counter(labels)
    total = sum(counts.values())
    if not total:
        raise ValueError("no labels to count")
    return max(counts.values()) / total


def nsp_labels(dataset: Path, split: str = "validation") -> list[int]:
    """The next-sentence labels of one split of a dataset, in stored order."""
    manifest = json.loads((dataset / "manifest.json").read_text(encoding="utf-8"))
    dtype = np.dtype(manifest["token_dtype"])
    labels = []
    for shard in manifest["splits"][split]["shards"]:
        for member in read_shard_members(str(dataset / shard["name"]), shard["samples"], shard["sha256"]):
            labels.append(decode_sample(member, dtype).next_sentence_label)
    return labels


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


def collect(layout: DemoLayout, timings: dict[str, float]) -> dict[str, Any]:
    """Every figure of the report, from the files the steps wrote and the MLflow registry."""
    manifest = json.loads((layout.dataset / "manifest.json").read_text(encoding="utf-8"))
    pretraining = read_json_lines(layout.pretrain / "metrics.jsonl")
    evaluations = [r for r in pretraining if "eval_mlm_loss" in r]
    if not evaluations:
        raise ValueError(f"{layout.pretrain / 'metrics.jsonl'} holds no evaluation")
    registry = registry_state(layout.tracking_uri, [REGISTERED_MODEL, CLASSIFIER_MODEL])
    champion = registry[REGISTERED_MODEL]["aliases"][CHAMPION]
    champion_tags = next(v["tags"] for v in registry[REGISTERED_MODEL]["versions"] if v["version"] == champion)
    finetuned = {
        run: json.loads((directory / "finetune_summary.json").read_text(encoding="utf-8"))
        for run, directory in (("pretrained", layout.finetune_pretrained), ("scratch", layout.finetune_scratch))
    }
    validation_labels = [json.loads(line)["label"] for line in CLASSIFY_VALIDATION.read_text().splitlines() if line]
    return {
        "corpus": {
            "path": str(CORPUS),
            "bytes": CORPUS.stat().st_size,
            "documents": manifest["counters"]["documents"],
        },
        "dataset": {
            "path": str(layout.dataset),
            "train_sequences": manifest["splits"]["train"]["samples"],
            "validation_sequences": manifest["splits"]["validation"]["samples"],
            "shards": len(manifest["splits"]["train"]["shards"]) + len(manifest["splits"]["validation"]["shards"]),
        },
        "pretraining": {
            "steps": max(r["step"] for r in pretraining),
            "held_out": evaluations[-1],
            "nsp_majority_share": majority_share(nsp_labels(layout.dataset)),
            "champion": {"name": REGISTERED_MODEL, "version": champion, "step": int(champion_tags["step"])},
        },
        "finetuning": {
            "task": "classify: tutorial or c-api paragraph",
            "validation_examples": len(validation_labels),
            "majority_share": majority_share(validation_labels),
            **{
                run: {
                    "accuracy": summary["evaluation"]["accuracy"],
                    "macro_f1": summary["evaluation"]["macro_f1"],
                    "best_epoch": summary["best_epoch"],
                    "accuracy_by_epoch": epoch_accuracies(directory / "metrics.jsonl"),
                    "model": summary["exported"],
                }
                for (run, summary), directory in zip(
                    finetuned.items(), (layout.finetune_pretrained, layout.finetune_scratch), strict=True
                )
            },
        },
        "registry": registry,
        "artefacts": {
            "tokenizer": str(layout.tokenizer),
            "dataset": str(layout.dataset),
            "pretraining_run": str(layout.pretrain),
            "exported_champion": str(layout.pretrain / "exports" / f"step{int(champion_tags['step']):08d}"),
            "finetuned_pretrained": finetuned["pretrained"]["exported"],
            "finetuned_scratch": finetuned["scratch"]["exported"],
            "mlflow_store": str(layout.mlflow),
            "loss_curves": str(layout.loss_curves),
            "logs": str(layout.logs),
        },
        "mlflow_ui": mlflow_ui_command(layout),
        "timings_s": timings,
    }


def epoch_accuracies(metrics: Path) -> list[float]:
    """Held-out accuracy after each epoch of a fine-tuning run, in epoch order."""
    records = [r for r in read_json_lines(metrics) if "eval_accuracy" in r]
    return [r["eval_accuracy"] for r in sorted(records, key=lambda r: r["epoch"])]


def mlflow_ui_command(layout: DemoLayout) -> str:
    mlflow = Path(sys.executable).parent / "mlflow"
    executable = str(mlflow) if mlflow.is_file() else "mlflow"
    return f"{executable} ui --backend-store-uri {layout.tracking_uri} --port 5000"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def finetune_row(run: dict[str, Any]) -> str:
    by_epoch = " ".join(f"{a:.2f}" for a in run["accuracy_by_epoch"])
    return f"{run['accuracy']:.3f} | {run['macro_f1']:.3f} | {run['best_epoch']} | {by_epoch} |"


def summary_table(summary: dict[str, Any]) -> str:
    """The report as Markdown: held-out pretraining figures, fine-tuning pretrained against scratch, artefacts."""
    corpus, dataset, pre, tune = summary["corpus"], summary["dataset"], summary["pretraining"], summary["finetuning"]
    held_out, champion = pre["held_out"], pre["champion"]
    registry = summary["registry"]
    classifier_aliases = registry[CLASSIFIER_MODEL]["aliases"]
    lines = [
        "# bertpipe demo",
        "",
        f"Corpus `{corpus['path']}`: {corpus['bytes'] / 1e6:.1f} MB, {corpus['documents']:,} documents -> "
        f"{dataset['train_sequences']:,} training and {dataset['validation_sequences']:,} held-out sequences "
        f"(max 128 tokens) in {dataset['shards']} shards.",
        "",
        f"| held-out pretraining evaluation (step {held_out['step']}) | value | majority-class baseline |",
        "|---|---:|---:|",
        f"| masked-LM accuracy ({held_out['eval_masked_tokens']:,} masked tokens) | "
        f"{held_out['eval_mlm_accuracy']:.3f} | |",
        f"| masked-LM loss | {held_out['eval_mlm_loss']:.3f} | |",
        f"| next-sentence accuracy ({held_out['eval_sequences']:,} pairs) | {held_out['eval_nsp_accuracy']:.3f} | "
        f"{pre['nsp_majority_share']:.3f} |",
        "",
        f"| fine-tuned classifier, {tune['task']} ({tune['validation_examples']} held-out paragraphs) "
        "| accuracy | macro-F1 | best epoch | accuracy after each epoch |",
        "|---|---:|---:|---:|---|",
        f"| from `models:/{champion['name']}@champion` (version {champion['version']}, step {champion['step']}) | "
        + finetune_row(tune["pretrained"]),
        "| from random weights | " + finetune_row(tune["scratch"]),
        f"| majority class | {tune['majority_share']:.3f} | | | |",
        "",
        "| artefact | where |",
        "|---|---|",
        f"| WordPiece vocabulary | `{summary['artefacts']['tokenizer']}` |",
        f"| shards, manifest.json | `{summary['artefacts']['dataset']}` |",
        f"| pretraining run: checkpoints, metrics.jsonl | `{summary['artefacts']['pretraining_run']}` |",
        f"| champion exported for Hugging Face | `{summary['artefacts']['exported_champion']}` |",
        f"| registered pretrained model | `models:/{REGISTERED_MODEL}@champion` = version {champion['version']} of "
        f"{len(registry[REGISTERED_MODEL]['versions'])} |",
        f"| registered classifier | `models:/{CLASSIFIER_MODEL}@champion` = version "
        f"{classifier_aliases.get(CHAMPION, '-')} |",
        f"| fine-tuned classifiers | `{summary['artefacts']['finetuned_pretrained']}`, "
        f"`{summary['artefacts']['finetuned_scratch']}` |",
        f"| MLflow store (runs, metrics, models) | `{summary['artefacts']['mlflow_store']}` |",
        f"| loss curves | `{summary['artefacts']['loss_curves']}` |",
        f"| each step's log | `{summary['artefacts']['logs']}` |",
        "",
        "Step times: "
        + ", ".join(f"{name} {_duration(s)}" for name, s in summary["timings_s"].items())
        + f"; in all {_duration(sum(summary['timings_s'].values()))}.",
        "",
        f"MLflow UI: `{summary['mlflow_ui']}`, then open http://127.0.0.1:5000",
        "",
    ]
    return "\n".join(lines)


def plot_loss_curves(layout: DemoLayout, summary: dict[str, Any]) -> Path:
    """Three panels: pretraining losses (training and held-out), fine-tuning loss and held-out accuracy per
    epoch, pretrained against random weights."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    pretraining = read_json_lines(layout.pretrain / "metrics.jsonl")
    train = [r for r in pretraining if "loss" in r]
    held_out = [r for r in pretraining if "eval_mlm_loss" in r]
    runs = {"pretrained": layout.finetune_pretrained, "from scratch": layout.finetune_scratch}
    tuning = {name: read_json_lines(directory / "metrics.jsonl") for name, directory in runs.items()}

    figure, (pre_axes, loss_axes, accuracy_axes) = plt.subplots(1, 3, figsize=(15, 4.5), dpi=100)
    pre_axes.plot([r["step"] for r in train], [r["mlm_loss"] for r in train], label="MLM loss (training)")
    pre_axes.plot([r["step"] for r in train], [r["nsp_loss"] for r in train], label="NSP loss (training)")
    pre_axes.plot(
        [r["step"] for r in held_out], [r["eval_mlm_loss"] for r in held_out], "o--", label="MLM loss (held out)"
    )
    pre_axes.set(title="Pretraining", xlabel="step", ylabel="loss")
    for name, records in tuning.items():
        losses = [r for r in records if "loss" in r]
        loss_axes.plot([r["step"] for r in losses], [r["loss"] for r in losses], label=name)
        epochs = [r for r in records if "eval_accuracy" in r]
        accuracy_axes.plot([r["epoch"] for r in epochs], [r["eval_accuracy"] for r in epochs], "o-", label=name)
    loss_axes.set(title="Fine-tuning: training loss", xlabel="step", ylabel="cross-entropy")
    accuracy_axes.axhline(summary["finetuning"]["majority_share"], color="grey", linestyle=":", label="majority")
    accuracy_axes.set(title="Fine-tuning: held-out accuracy", xlabel="epoch", ylabel="accuracy")
    for axes in (pre_axes, loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    layout.loss_curves.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(layout.loss_curves)
    plt.close(figure)
    return layout.loss_curves
