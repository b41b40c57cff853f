"""`python -m pipeline.demo` (`make demo`): the whole pipeline on the bundled Python-documentation corpus, on
CPU. A WordPiece vocabulary, the Beam job on 2 local workers, DeepSpeed pretraining on 2 CPU ranks with ZeRO-2
and held-out evaluation, export and registration in a local MLflow store; then a classifier fine-tuned from
`models:/bert-demo@champion` and the same architecture from random weights, on 10%, 30% and 100% of the
labelled training examples and over 3 seeds, each scored on a test set; then a summary table and a PNG of the
curves. 30-45 minutes on 2 cores at `--size full`; the report gives each step's time."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from model.checkpoint import atomic_write_bytes
from pipeline.demo.downstream import percent
from pipeline.demo.layout import CLASSIFY_TRAIN, DEFAULT_HOSTFILE, ROOT, SIZES, DemoLayout, missing_checkout_files
from pipeline.demo.report import collect, plot_loss_curves, summary_table
from pipeline.demo.steps import StepFailed, demo_steps, run_step, step_environment, write_task_files


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("runs/demo"), help="demo directory (default runs/demo)")
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="small: a quick run for the tests")
    parser.add_argument("--pretrain-steps", type=int, help="instead of the size's")
    parser.add_argument("--finetune-epochs", type=int, help="instead of the size's")
    parser.add_argument(
        "--finetune-seeds",
        type=int,
        metavar="N",
        help="fine-tune each fraction and arm with seeds 0..N-1 (full: 3, small: 1)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo's outputs in --output")
    args = parser.parse_args(argv)
    for name in ("pretrain_steps", "finetune_epochs", "finetune_seeds"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = SIZES[args.size]
    if args.pretrain_steps is not None:
        size = dataclasses.replace(size, pretrain_steps=args.pretrain_steps)
        size = dataclasses.replace(size, eval_every=max(1, min(size.eval_every, args.pretrain_steps)))
    if args.finetune_epochs is not None:
        size = dataclasses.replace(size, finetune_epochs=args.finetune_epochs)
    if args.finetune_seeds is not None:
        size = dataclasses.replace(size, finetune_seeds=args.finetune_seeds)
    layout = DemoLayout(args.output.resolve())
    missing = missing_checkout_files()
    if missing:
        print(
            f"demo: the demo runs from a checkout of the repository: it reads the bundled corpus and task "
            f"(tests/data/pydocs), its config and the launch scripts, which an installed package does not carry; "
            f"missing under {ROOT}: {', '.join(str(p.relative_to(ROOT)) for p in missing)}. Clone the repository "
            f"and run `make demo` there",
            file=sys.stderr,
        )
        return 2
    if DEFAULT_HOSTFILE.exists():
        print(
            f"demo: {DEFAULT_HOSTFILE} exists, and the launch scripts would start ranks on the machines "
            "it names; the demo runs on this machine only: move the file aside while it runs",
            file=sys.stderr,
        )
        return 2
    earlier = layout.existing_outputs()
    if earlier and not args.overwrite:
        print(
            f"demo: {layout.root} already holds a demo's outputs ({', '.join(p.name for p in earlier)}); pass "
            "--overwrite (make demo DEMO_ARGS=--overwrite) to replace them, or choose another --output",
            file=sys.stderr,
        )
        return 2
    layout.remove_outputs()
    layout.root.mkdir(parents=True, exist_ok=True)

    steps = demo_steps(layout, size)
    env = step_environment(layout, dict(os.environ))
    timings: dict[str, float] = {}
    print(f"demo: writing to {layout.root}")
    task = write_task_files(layout, size)
    sizes = {len(part) for split in task.folds for part in (split.test, split.validation, split.train)}
    first = task.folds[0]
    print(
        f"demo: {CLASSIFY_TRAIN.name}: {sum(len(s.test) for s in task.folds)} paragraphs dealt into {len(task.folds)} "
        f"folds; seed s tests on fold s % {len(task.folds)} ({len(first.test)} paragraphs), chooses the epoch and "
        f"the learning rate on {len(first.validation)} of the others and trains on {len(first.train)}"
        + (" (the folds differ by an example or so)" if len(sizes) > 3 else "")
        + f"; the {task.corpus_lines_dropped} corpus lines that hold a labelled paragraph are left out of "
        f"pretraining ({layout.tasks}); training on "
        + ", ".join(f"{percent(f)}% ({n})" for (f, seed), n in task.subsets.items() if seed == 0)
        + f" of them, {size.finetune_seeds} seed{'s' if size.finetune_seeds > 1 else ''}",
        flush=True,
    )
    for number, step in enumerate(steps, 1):
        print(f"[{number}/{len(steps)}] {step.title} (log: {layout.logs / step.name}.log)", flush=True)
        try:
            timings[step.name] = run_step(step, layout, env, echo=lambda line: print(line, flush=True))
        except StepFailed as error:
            print(f"demo: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:  # the step's processes got the same signal and stop on their own
            print(f"\ndemo: interrupted during '{step.name}'; run again with --overwrite", file=sys.stderr)
            return 130
        print(f"      done in {timings[step.name]:.0f} s", flush=True)

    start = time.monotonic()
    runs = [step.run for step in steps if step.run is not None]
    summary = collect(layout, runs, timings, size.finetune_epochs)
    plot_loss_curves(layout, summary)
    table = summary_table(summary)
    atomic_write_bytes(layout.summary_json, (json.dumps(summary, indent=2) + "\n").encode())
    atomic_write_bytes(layout.summary_markdown, table.encode())
    print(f"      report in {time.monotonic() - start:.0f} s\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
