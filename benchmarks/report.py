"""Rewrites the generated blocks of benchmarks/RESULTS.md from the JSON under benchmarks/results/.

RESULTS.md mixes prose (how each benchmark works, why a goal is missed) with tables that come from the
JSON alone. A generated block sits between `<!-- begin NAME -->` and `<!-- end NAME -->`; everything
outside the markers is left as it is. A block whose JSON is missing says how to produce it.

    python benchmarks/report.py [--results benchmarks/results] [--markdown benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.demo.downstream import Spread, signed_points

ROOT = Path(__file__).resolve().parents[1]

# Goals from the issues that asked for each benchmark.
CPU_STEP_SPEEDUP_GOAL = 2.0
GPU_MFU_GOAL = 0.60
GPU_SPEEDUP_GOAL = 1.5
PREPROCESS_TOKENS_PER_CORE_GOAL = 400_000
PREPROCESS_SPEEDUP_GOAL = 1.7
PREPROCESS_MEMORY_GROWTH_GOAL = 0.20
COMPRESSED_MEMORY_GROWTH_GOAL = 0.20  # one compressed file 10x larger: its read task's memory stays put
LOADER_SAMPLES_GOAL = 10_000
PACKING_IDEAL_SHARE_GOAL = 0.90  # packed speed-up at least this share of what the padding removed promises
GPU_REAL_TOKENS_GOAL = 250_000  # per GPU at seq 512: MLPerf Training BERT's class (~970 samples/s per H100)


def verdict(met: bool, figure: str, shortfall: str = "") -> str:
    return f"met ({figure})" if met else f"**missed** ({figure}{'; ' + shortfall if shortfall else ''})"


def table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """A Markdown table; `align` holds one character per column, `l` or `r`."""
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]


def model_step_cpu(results: Path) -> list[str]:
    run = json.loads((results / "model_step_cpu_mini.json").read_text())
    ours, theirs = run["results"]["ours"], run["results"]["transformers"]
    speedup = run["speedup_vs_transformers"]
    return [
        f"Machine: {run['machine']}, torch {run['torch']}, {run['threads']} threads. `{run['preset']}`, batch "
        f"{run['batch']}, seq {run['seq_len']}, {run['masked_per_sequence']} masked per sequence, {run['dtype']}; "
        f"median of {run['steps']} timed steps. `benchmarks/results/model_step_cpu_mini.json`.",
        "",
        *table(
            ["implementation", "ms / step", "sequences / s", "ratio"],
            [
                ["ours", f"{ours['step_s_median'] * 1e3:.1f}", f"{ours['sequences_per_s']:.1f}", f"{speedup:.2f}x"],
                ["transformers", f"{theirs['step_s_median'] * 1e3:.1f}", f"{theirs['sequences_per_s']:.1f}", "1.00x"],
            ],
            "lrrr",
        ),
        "",
        f"Goal: >= {CPU_STEP_SPEEDUP_GOAL:g}x Hugging Face: "
        + verdict(speedup >= CPU_STEP_SPEEDUP_GOAL, f"{speedup:.2f}x")
        + ".",
    ]


def gpu_runs(results: Path) -> list[dict[str, Any]]:
    runs = []
    for path in sorted(results.glob("model_step_*.json")):
        run = json.loads(path.read_text())
        if run.get("preset") == "large" and run.get("threads") is None:  # a GPU run
            runs.append({**run, "file": path.name})
    return sorted(runs, key=lambda r: (r["machine"], r["seq_len"], r["batch"], r["compile"]))


GPU_HEADER = ["seq", "batch", "compiled", "ours ms / step", "ours seq / s", "ours MFU", "HF seq / s", "HF MFU", "ratio"]


def model_step_gpu(results: Path) -> list[str]:
    runs = gpu_runs(results)
    if not runs:
        raise FileNotFoundError("no GPU model_step results")
    lines: list[str] = []
    for machine in dict.fromkeys(r["machine"] for r in runs):
        mine = [r for r in runs if r["machine"] == machine]
        rows = []
        for r in mine:
            ours, theirs = r["results"]["ours"], r["results"]["transformers"]
            rows.append(
                [
                    str(r["seq_len"]),
                    str(r["batch"]),
                    "yes" if r["compile"] else "no",
                    f"{ours['step_s_median'] * 1e3:.1f}",
                    f"{ours['sequences_per_s']:,.0f}",
                    f"{ours['mfu']:.1%}",
                    f"{theirs['sequences_per_s']:,.0f}",
                    f"{theirs['mfu']:.1%}",
                    f"{r['speedup_vs_transformers']:.2f}x",
                ]
            )
        lines += [
            f"Machine: {machine}, torch {mine[0]['torch']}, {mine[0]['dtype']}. Files: "
            + ", ".join(f"`{r['file']}`" for r in mine)
            + ".",
            "",
            *table(GPU_HEADER, rows, "rrlrrrrrr"),
            "",
        ]
        best_mfu = max(r["results"]["ours"]["mfu"] for r in mine)
        best_ratio_128 = max((r["speedup_vs_transformers"] for r in mine if r["seq_len"] == 128), default=0.0)
        lines += [
            f"Goals on {machine}: >= {GPU_MFU_GOAL:.0%} MFU: "
            + verdict(
                best_mfu >= GPU_MFU_GOAL, f"best {best_mfu:.1%}", f"{(GPU_MFU_GOAL - best_mfu) * 100:.1f} points short"
            )
            + f"; >= {GPU_SPEEDUP_GOAL:g}x Hugging Face at seq 128: "
            + verdict(best_ratio_128 >= GPU_SPEEDUP_GOAL, f"best {best_ratio_128:.2f}x")
            + ".",
            "",
        ]
    return lines[:-1]


def preprocess(results: Path) -> list[str]:
    run = json.loads((results / "preprocess.json").read_text())
    one, two, scaled, scaled_one = run["runs"]
    scale = run["scale"]

    def row(label: str, r: dict[str, Any]) -> list[str]:
        walls = r.get("wall_s_all", [r["wall_s"]])
        wall = f"{r['wall_s']:.1f}" + (f" (of {', '.join(f'{w:.1f}' for w in walls)})" if len(walls) > 1 else "")
        return [
            label,
            f"{r['corpus_bytes'] / 2**20:,.0f} MiB",
            wall,
            f"{r['output_tokens']:,}",
            f"{r['tokens_per_s_per_core']:,.0f}",
            f"{r['peak_rss_bytes'] / 2**20:,.0f} MiB",
        ]

    growth = run["peak_rss_growth_at_scale"]
    goal = PREPROCESS_TOKENS_PER_CORE_GOAL
    # the 1x runs alternate 1 and 2 workers: round i pairs the i-th run of each
    walls_one, walls_two = one.get("wall_s_all", [one["wall_s"]]), two.get("wall_s_all", [two["wall_s"]])
    rounds = [a / b for a, b in zip(walls_one, walls_two, strict=True)]
    at_scale = run["speedup_2_workers_at_scale"]
    return [
        f"Machine: {run['machine']}. max_seq_length {run['max_seq_length']}, dupe_factor {run['dupe_factor']}. "
        "`benchmarks/results/preprocess.json`.",
        "",
        *table(
            ["setting", "corpus", "wall (s)", "output tokens", "tokens/s per core", "peak RSS (tree)"],
            [
                row("1 worker", one),
                row("2 workers", two),
                row(f"2 workers, {scale:g}x corpus", scaled),
                row(f"1 worker, {scale:g}x corpus", scaled_one),
            ],
            "lrrrrr",
        ),
        "",
        f"- >= {goal:,} output tokens/s per core: with 1 worker "
        + verdict(one["tokens_per_s_per_core"] >= goal, f"{one['tokens_per_s_per_core']:,.0f}")
        + ", with 2 workers "
        + verdict(
            two["tokens_per_s_per_core"] >= goal,
            f"{two['tokens_per_s_per_core']:,.0f} per core",
            f"{1 - two['tokens_per_s_per_core'] / goal:.0%} short",
        )
        + ".",
        f"- >= {PREPROCESS_SPEEDUP_GOAL:g}x from 1 to 2 workers: on the {scale:g}x corpus "
        + verdict(at_scale >= PREPROCESS_SPEEDUP_GOAL, f"{at_scale:.2f}x")
        + "; on the 1x corpus "
        + verdict(
            statistics.median(rounds) >= PREPROCESS_SPEEDUP_GOAL,
            f"median of {len(rounds)} rounds {statistics.median(rounds):.2f}x, "
            f"range {min(rounds):.2f}-{max(rounds):.2f}x, fastest against fastest {run['speedup_2_workers']:.2f}x",
        )
        + ".",
        f"- peak memory growing <= {PREPROCESS_MEMORY_GROWTH_GOAL:.0%} from 1x to {scale:g}x: "
        + verdict(growth <= PREPROCESS_MEMORY_GROWTH_GOAL, f"{growth:+.1%}")
        + ".",
    ]


LOADER_ROWS = {
    "ours": "ours (`pipeline.data.loader.stream_batches`: seeded shard windows, whole-shard read with sha256 check, "
    "msgpack decode, collate)",
    "ours_no_checksum": "ours without the sha256 check",
    "ours_remask": "ours with dynamic re-masking",
    "webdataset": "reference: `webdataset.WebDataset(...).shuffle(1000)`, same decode and collate",
    "floor_webdataset_members": "floor: webdataset tar member iteration alone",
    "floor_our_shard_read": "floor: our shard read (whole shard in memory, sha256 checked)",
}


def compressed_memory(results: Path) -> list[str]:
    run = json.loads((results / "compressed_memory.json").read_text())
    rows = [
        [
            f"{r['text_mb']:,.0f} MB",
            f"{r['compressed_bytes'] / 2**20:,.0f} MiB",
            f"{r['wall_s']:.0f}",
            f"{r['output_tokens']:,}",
            f"{r['peak_rss_bytes'] / 2**20:,.0f} MiB",
        ]
        for r in run["runs"]
    ]
    growth = run["peak_rss_growth"]
    return [
        f"Machine: {run['machine']}. One gzip file, {run['workers']} local worker, dupe_factor {run['dupe_factor']}. "
        "`benchmarks/results/compressed_memory.json`.",
        "",
        *table(["text", "gzip file", "wall (s)", "output tokens", "peak RSS (tree)"], rows, "rrrrr"),
        "",
        f"Goal: peak memory of the largest file <= {COMPRESSED_MEMORY_GROWTH_GOAL:.0%} above the smallest's: "
        + verdict(growth <= COMPRESSED_MEMORY_GROWTH_GOAL, f"{growth:+.1%}")
        + ".",
    ]


def plan(results: Path) -> list[str]:
    run = json.loads((results / "plan.json").read_text())
    shared, large = run["shared_plan"], run["terabyte_plan"]
    rows = [
        [
            f"{shared['buckets']:,} buckets -> {shared['shards']:,} shards",
            f"{shared['ours_s']:.3f}",
            f"{shared['definition_s']:.1f}",
            f"{shared['speedup']:,.0f}x",
        ],
        [
            f"{large['buckets']:,} buckets -> {large['shards']:,} shards (~{large['text_tb']} TB of text)",
            f"{large['ours_s']:.1f}",
            f"~{large['definition_s_scaled'] / 3600:,.0f} h (scaled)",
            "",
        ],
    ]
    return [
        f"Machine: {run['machine']}; the planning itself runs on one core.",
        "",
        *table(["plan", "ours, s", "every shard x every bucket, s", "speed-up"], rows, "lrrr"),
    ]


def loader(results: Path) -> list[str]:
    run = json.loads((results / "loader.json").read_text())
    measured = run["results"]
    ours, reference = measured["ours"]["samples_per_s"], measured["webdataset"]["samples_per_s"]
    return [
        f"Machine: {run['machine']}, Python {run['python']}, webdataset {run['webdataset']}. One process, seq "
        f"{run['max_seq_length']}, batches of {run['batch']}, {run['dataset']['train_samples']:,} samples in "
        f"{run['dataset']['train_shards']} shards; {run['repeat']} interleaved rounds, the fastest counts. "
        "`benchmarks/results/loader.json`.",
        "",
        *table(
            ["pipeline", "samples/s per process"],
            [
                [label, f"{measured[key]['samples_per_s']:,.0f}"]
                for key, label in LOADER_ROWS.items()
                if key in measured
            ],
            "lr",
        ),
        "",
        f"Goal >= {LOADER_SAMPLES_GOAL:,} samples/s per process, collated: "
        + verdict(ours >= LOADER_SAMPLES_GOAL, f"{ours:,.0f}, {ours / reference:.2f}x the webdataset pipeline")
        + ".",
    ]


def packing(results: Path) -> list[str]:
    """One table per machine: `packing.json` (CPU) and `packing_<gpu>_<preset>.json` (`make bench` on a GPU)."""
    files = sorted(results.glob("packing*.json"))
    if not files:
        raise FileNotFoundError("no packing results")
    lines: list[str] = []
    for path in files:
        lines += [*packing_run(json.loads(path.read_text()), path.name), ""]
    return lines[:-1]


def packing_run(run: dict[str, Any], name: str) -> list[str]:
    rows, met = [], []
    for r in run["results"]:
        share, rate = r["padding_share"], r["real_tokens_per_s"]
        met.append(r["share_of_ideal"] >= PACKING_IDEAL_SHARE_GOAL)
        rows.append(
            [
                str(r["max_seq_length"]),
                f"{share['padded']:.3f}",
                f"{share['packed']:.3f}",
                f"{r['rows_per_batch']['packed']:.1f}",
                f"{rate['padded']:,.0f}",
                f"{rate['packed']:,.0f}",
                f"{r['speedup']:.2f}x",
                f"{r['ideal_speedup']:.2f}x",
                f"{r['share_of_ideal']:.2f}",
            ]
        )
    figures = ", ".join(f"seq {r['max_seq_length']}: {r['share_of_ideal']:.2f}" for r in run["results"])
    lines = [
        f"Machine: {run['machine']}, torch {run['torch']}, {run['threads']} threads. `{run['preset']}`, "
        f"{run['dtype']}, micro-batches of {run['batch']} instances from the bundled corpus's shards; a training "
        f"step (forward, backward, AdamW) timed on each form, {run['repeat']} interleaved rounds, the fastest "
        f"counts. `benchmarks/results/{name}`.",
        "",
        *table(
            [
                "seq",
                "padding, padded",
                "padding, packed",
                "rows per batch, packed",
                "real tokens/s, padded",
                "real tokens/s, packed",
                "speed-up",
                "ideal",
                "share of ideal",
            ],
            rows,
            "rrrrrrrrr",
        ),
        "",
        f"Goal: a speed-up >= {PACKING_IDEAL_SHARE_GOAL:.0%} of the ideal (1 - packed share) / (1 - padded share): "
        + verdict(all(met), figures)
        + ".",
    ]
    at_512 = [r for r in run["results"] if r["max_seq_length"] == 512]
    if run["dtype"] == "bf16" and at_512:  # a GPU run: the MLPerf-class throughput goal
        packed = at_512[0]["real_tokens_per_s"]["packed"]
        lines[-1] += (
            f" Goal >= {GPU_REAL_TOKENS_GOAL:,} real tokens/s at seq 512: "
            + verdict(packed >= GPU_REAL_TOKENS_GOAL, f"{packed:,.0f}")
            + "."
        )
    return lines


LEARNING_ARMS = {
    "ours": "ours (`launch/pretrain.sh`, DeepSpeed)",
    "peer": "transformers `Trainer`",
    "random": "random weights (no pretraining)",
}


def mean_std(stats: dict[str, Any] | None, digits: int = 3) -> str:
    """`mean ± std` over seeds (the mean alone for one seed; `n/a` where there is no figure)."""
    if not stats or stats.get("mean") is None:
        return "n/a"
    std = stats.get("std")
    return f"{stats['mean']:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def test_protocol(tune: dict[str, Any]) -> str:
    """How the classifier was scored: a run of the current benchmark records its split sizes (the demo's split);
    an earlier run scored on paragraphs of other files."""
    if "folds" in tune:
        rates = ", ".join(f"{rate:g}" for rate in tune["learning_rates"])
        return (
            f"split as the demo splits it ({tune['folds']} folds; each seed tested on one, {tune['train_examples']} "
            f"to train, {tune['validation_examples']} to choose the epoch and each arm's learning rate of {rates}), "
            f"{tune['test_examples']} test paragraphs over the seeds' folds, none in the pretraining corpus"
        )
    if "train_examples" in tune:
        return (
            f"split as the demo splits it ({tune['train_examples']} to train, {tune['validation_examples']} to choose "
            f"the epoch), scored once on {tune['test_examples']} test paragraphs the pretraining corpus leaves out"
        )
    return (
        f"epoch chosen on the demo's validation split, scored on {tune['test_examples']} test paragraphs from files "
        f"the corpus leaves out"
    )


def learning(results: Path) -> list[str]:
    run = json.loads((results / "learning.json").read_text())
    arms = {name: run["arms"][name]["summary"] for name in LEARNING_ARMS if name in run["arms"]}
    tune = run["finetune"]
    rows = []
    for name, summary in arms.items():
        final = summary["final"]
        per_step = summary.get("seconds_per_step")
        rows.append(
            [
                LEARNING_ARMS[name],
                mean_std(final["mask_loss"]),
                mean_std(final["mask_unigram_loss"]),
                mean_std(final["mask_gain"]),
                mean_std(final["mask_accuracy"]),
                f"{mean_std(final['nsp_accuracy'])} ({mean_std(final['nsp_majority'])})",
                mean_std(per_step) if per_step else "",
                mean_std(summary["downstream"]["accuracy_test"])
                + (f" (lr {summary['finetune_learning_rate']:g})" if "finetune_learning_rate" in summary else ""),
                mean_std(summary["downstream"]["accuracy_validation"]),
            ]
        )
    curve_arms = [name for name in ("ours", "peer") if name in arms]
    curves = {name: {p["step"]: p for p in arms[name]["curve"]} for name in curve_arms}
    steps = sorted(set.intersection(*(set(c) for c in curves.values())))
    curve_rows = [
        [str(step)]
        + [
            cell
            for name in curve_arms
            for cell in (mean_std(curves[name][step]["mask_loss"]), mean_std(curves[name][step]["wall_s"], 0))
        ]
        for step in steps
    ]
    curve_header = ["step"] + [header for name in curve_arms for header in (f"{name} [MASK] loss", f"{name} wall (s)")]
    seeds = run["seeds"]
    subset = "as many updates on a subset" if tune.get("updates") else "the same epochs on every subset"
    lines = [
        f"Machine: {run['machine']}, torch {run['torch']}, transformers {run['transformers']}, deepspeed "
        f"{run['deepspeed']}. `{run['model']}` from `{run['config']}`, {run['steps']} steps of {run['batch']} "
        f"sequences ({run['sequences']:,}); ours on {run['ours_ranks']} CPU ranks, the peer in one process with "
        f"{run['peer_threads']} threads; {len(seeds)} seed(s), mean ± std. "
        f"Held out: {run['dataset']['validation_samples']:,} pairs. Classifier: {tune['epochs']} epochs over all "
        f"its training examples ({subset}), "
        f"{test_protocol(tune)} (majority class {tune['majority_share']:.3f}). "
        "`benchmarks/results/learning.json`, `learning.png`.",
        "",
        *table(
            [
                "arm",
                "held-out [MASK] loss",
                "unigram guess",
                "gain (nats)",
                "[MASK] accuracy",
                "NSP accuracy (majority)",
                "s / step",
                "classifier, test accuracy",
                "classifier, validation (chose the epoch)",
            ],
            rows,
            "lrrrrrrrr",
        ),
        "",
        *table(curve_header, curve_rows, "r" * len(curve_header)),
    ]
    lines += downstream_by_fraction(run.get("downstream_gaps") or {})
    ratio = run.get("wall_per_step_ratio_ours_to_peer")
    if ratio is not None:
        lines += [
            "",
            f"Wall time per training step, ours / transformers: {ratio:.2f}x (start-up and evaluations left out).",
        ]
    return lines


def gap_points(stats: dict[str, Any]) -> str:
    """The pretrained-minus-random gap in accuracy points, `+7.2 ± 2.1`, bold where it exceeds twice its std."""
    text = signed_points(Spread(**stats))
    return f"**{text}**" if stats.get("std") is not None and abs(stats["mean"]) > 2 * stats["std"] else text


def downstream_by_fraction(gaps: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The classifier's test accuracy at each amount of labelled data, and each pretrained arm's gap to random
    weights (per-seed differences; bold: more than twice their std)."""
    if not gaps:
        return []
    arms = [arm for arm in ("ours", "peer") if arm in gaps]
    header = ["labelled training examples", *(LEARNING_ARMS[arm] for arm in arms), LEARNING_ARMS["random"]]
    header += [f"{arm} − random, points" for arm in arms]
    rows = []
    for index, first in enumerate(gaps[arms[0]]):
        at = {arm: gaps[arm][index] for arm in arms}
        cells = [f"{first['fraction'] * 100:g}% ({first['train_examples']})"]
        cells += [f"{mean_std(at[arm]['pretrained'])} (lr {at[arm]['learning_rates'][arm]:g})" for arm in arms]
        cells += [f"{mean_std(first['random'])} (lr {first['learning_rates']['random']:g})"]
        cells += [gap_points(at[arm]["gap_points"]) for arm in arms]
        rows.append(cells)
    return ["", "Classifier test accuracy by the amount of labelled data (each arm at its learning rate):", "",
            *table(header, rows, "l" + "r" * (len(header) - 1))]  # fmt: skip


TASK_REFERENCES = {
    "words": "words only (logistic regression on TF-IDF)",
    "reference_encoder": "all-MiniLM-L6-v2, frozen (logistic regression on its mean hidden state)",
    "pretrained_cls": "ours pretrained, frozen [CLS] state",
    "pretrained_pooler": "ours pretrained, frozen pooler output",
    "random_cls": "random weights, frozen [CLS] state",
    "reference_encoder_finetuned": "all-MiniLM-L6-v2, fine-tuned as our model is",
}


def finetuned_reference_line(finetuned: dict | None) -> str:
    if not finetuned:
        return ""
    rates = ", ".join(f"{rate:g}" for rate in finetuned["learning_rates"])
    return (
        f" Fine-tuned: `launch/finetune.sh classify` as `learning.py` runs it, the updates of {finetuned['epochs']} "
        f"epochs over the 256 training paragraphs, the epoch chosen on validation, the learning rate ({rates}) "
        "on the seeds' mean validation accuracy."
    )


def task_reference(results: Path, file_name: str = "task_reference.json") -> list[str]:
    run = json.loads((results / file_name).read_text())
    references = [name for name in TASK_REFERENCES if name in run["summary"]]
    fractions = run["summary"][references[0]]
    examples = {(r["fraction"]): r["train_examples"] for r in run["runs"]}

    def cell(name: str, fraction: float) -> str:
        at = next(f for f in run["summary"][name] if f["fraction"] == fraction)
        return mean_std(at["test_accuracy"]) + (f" (lr {at['learning_rate']:g})" if "learning_rate" in at else "")

    rows = [
        [f"{at['fraction'] * 100:g}% ({examples[at['fraction']]})"]
        + [cell(name, at["fraction"]) for name in references]
        for at in fractions
    ]
    return [
        f"Machine: {run['machine']}, torch {run['torch']}. `{run['task']}`, the demo's {run['folds']} folds and "
        f"subsets, seeds {', '.join(str(s) for s in run['seeds'])} (as `learning.py`'s), test accuracy mean ± std; "
        f"each fit's L2 strength chosen on the fold's validation split. `benchmarks/results/{file_name}`"
        + (f", the pretrained models from `{run['pretrained']}`." if run.get("pretrained") else ".")
        + finetuned_reference_line(run.get("finetune_reference")),
        "",
        *table(
            ["labelled training examples", *(TASK_REFERENCES[name] for name in references)],
            rows,
            "l" + "r" * len(references),
        ),
    ]


BLOCKS: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "model_step_cpu": (
        model_step_cpu,
        "python benchmarks/model_step.py --out benchmarks/results/model_step_cpu_mini.json",
    ),
    "model_step_gpu": (model_step_gpu, "make bench on a machine with a GPU"),
    "preprocess": (preprocess, "python benchmarks/run_all.py --only preprocess"),
    "compressed_memory": (compressed_memory, "python benchmarks/run_all.py --only compressed_memory"),
    "plan": (plan, "python benchmarks/run_all.py --only plan"),
    "loader": (loader, "python benchmarks/run_all.py --only loader"),
    "packing": (packing, "python benchmarks/run_all.py --only packing"),
    "learning": (learning, "python benchmarks/run_all.py --only learning"),
    "task_reference": (task_reference, "python benchmarks/run_all.py --only task_reference"),
    "task_reference_pretrained": (
        lambda results: task_reference(results, "task_reference_pretrained.json"),
        "python benchmarks/task_reference.py --pretrained DIR --out benchmarks/results/task_reference_pretrained.json",
    ),
    "task_reference_finetuned": (
        lambda results: task_reference(results, "task_reference_finetuned.json"),
        "python benchmarks/task_reference.py --finetune-reference 3e-5 1e-4 --fractions 1 "
        "--out benchmarks/results/task_reference_finetuned.json",
    ),
}


def render(markdown: str, results: Path) -> str:
    """`markdown` with every generated block rewritten from `results`."""
    for name, (build, command) in BLOCKS.items():
        pattern = re.compile(rf"(<!-- begin {name} -->\n).*?(<!-- end {name} -->)", re.DOTALL)
        if not pattern.search(markdown):
            raise ValueError(f"RESULTS.md lacks the markers <!-- begin {name} --> ... <!-- end {name} -->")
        try:
            body = "\n".join(build(results))
        except FileNotFoundError:
            body = f"Not measured yet: `{command}`."
        markdown = pattern.sub(lambda m, body=body: f"{m.group(1)}{body}\n{m.group(2)}", markdown)
    return markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--markdown", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    args.markdown.write_text(render(args.markdown.read_text(), args.results))
    print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
