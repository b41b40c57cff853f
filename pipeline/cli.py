"""`bertpipe`: the one command-line entry point; each step of the pipeline is a subcommand."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from preprocessing.errors import BertpipeError, report

Handler = Callable[[argparse.Namespace, list[str]], int]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help line, also where the help says nothing else; descriptions and
    epilogs keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, [], argparse.SUPPRESS) and not isinstance(
            action,
            argparse._StoreConstAction,  # flags: their default is the absence of the flag
        )
        if shown and action.option_strings and "%(default)" not in text and "default" not in text:
            text += (" " if text else "") + "(default: %(default)s)"
        return text


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bertpipe")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown (not installed)"


def _model_info(args: argparse.Namespace, _: list[str]) -> int:
    """Print the architecture and parameter count of a preset or a model directory."""
    import torch

    from model import PRESETS, BertConfig, BertForPreTraining

    if args.model in PRESETS:
        config = BertConfig.from_preset(args.model)
    elif Path(args.model).is_dir():
        config = BertConfig.from_pretrained(args.model)
    else:
        raise UsageError(f"{args.model!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a model directory")
    with torch.device("meta"):  # count without allocating weights
        parameters = BertForPreTraining(config).num_parameters()
    print(
        f"layers={config.num_hidden_layers} hidden={config.hidden_size} heads={config.num_attention_heads} "
        f"ffn={config.intermediate_size} vocab={config.vocab_size} "
        f"max_positions={config.max_position_embeddings}"
    )
    print(f"parameters (BertForPreTraining, tied decoder counted once): {parameters:,}")
    return 0


def _tokenizer_train(args: argparse.Namespace, _: list[str]) -> int:
    from preprocessing.preprocess import guess_format
    from preprocessing.train_tokenizer import train

    size = train(
        args.input,
        args.out,
        vocab_size=args.vocab_size,
        lowercase=args.lowercase,
        input_format=args.format or guess_format(args.input),
        text_field=args.text_field,
        sample_mb=args.sample_mb,
        overwrite=args.overwrite,
    )
    print(f"WordPiece vocabulary of {size} entries ({'uncased' if args.lowercase else 'cased'}) -> {args.out}")
    return 0


def _preprocess(args: argparse.Namespace, beam_args: list[str]) -> int:
    from preprocessing import preprocess
    from preprocessing.beam_job import JobParams
    from preprocessing.preprocess import guess_format

    params = JobParams(
        input_format=args.format or guess_format(args.input),
        text_field=args.text_field,
        max_seq_length=args.max_seq_length,
        max_predictions_per_seq=args.max_predictions_per_seq,
        masked_lm_prob=args.masked_lm_prob,
        short_seq_prob=args.short_seq_prob,
        dupe_factor=args.dupe_factor,
        whole_word_mask=args.whole_word_mask,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        bucket_mb=args.bucket_mb,
        shard_mb=args.shard_mb,
        language=args.language,
    )
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        beam_args = preprocess.default_beam_args() + beam_args
    outcome = preprocess.run(args.input, args.tokenizer, args.output, params, beam_args, overwrite=args.overwrite)
    print(preprocess.summary(outcome, args.output))
    return 0


def _pretrain(args: argparse.Namespace, _: list[str]) -> int:
    from pipeline.training.pretrain import PretrainRequest, pretrain
    from pipeline.training.train_config import parse_overrides

    overrides = parse_overrides(args.set)
    if args.skip_bad_shards:
        overrides["skip_bad_shards"] = True
    request = PretrainRequest(
        config=args.config,
        dataset=args.dataset,
        output=args.output,
        resume=args.resume,
        init_from=args.init_from,
        overrides=overrides,
        deepspeed_config=args.deepspeed_config,
        tracking_uri=args.tracking_uri,
    )
    return pretrain(request)


def _register(args: argparse.Namespace, _: list[str]) -> int:
    from pipeline.handoff.registry import register_checkpoint, register_export
    from pipeline.handoff.tracking import tracking_uri

    source = Path(args.checkpoint or args.model)
    if args.checkpoint:
        run_dir = source if (source / "checkpoints").is_dir() else source.parent
        uri = tracking_uri(run_dir, args.tracking_uri)
        registration = register_checkpoint(source, uri, args.name, args.tag, args.run_id, args.phase)
    else:
        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise UsageError(
                "--model needs --tracking-uri or MLFLOW_TRACKING_URI (a checkpoint brings its run's store)"
            )
        if not args.name:
            raise UsageError("--model needs --name (the registered model)")
        tags = {"phase": args.phase} if args.phase else {}
        registration = register_export(source, uri, args.name, args.run_id, tags)
    aliases = f" (aliases: {', '.join(registration.aliases)})" if registration.aliases else ""
    print(f"registered {registration.uri}{aliases} at {uri}")
    return 0


def _finetune(args: argparse.Namespace, _: list[str]) -> int:
    from pipeline.finetune.task import TaskOptions
    from pipeline.finetune.trainer import FinetuneRequest, finetune

    options = TaskOptions(
        max_seq_length=args.max_seq_length,
        text_column=args.text_column,
        text_pair_column=args.text_pair_column,
        label_column=args.label_column,
        truncation=args.truncation,
        map_unseen_label=args.map_unseen_label,
        doc_stride=args.doc_stride,
        max_query_length=args.max_query_length,
        n_best=args.n_best,
        max_answer_length=args.max_answer_length,
        null_threshold=args.null_threshold,
        version_2=args.version_2,
    )
    request = FinetuneRequest(
        task=args.task,
        model=args.model,
        train=args.train,
        validation=args.validation,
        output=args.output,
        test=args.test,
        options=options,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        warmup_proportion=args.warmup_proportion,
        weight_decay=args.weight_decay,
        seed=args.seed,
        from_scratch=args.from_scratch,
        tokenizer=args.tokenizer,
        deepspeed_config=args.deepspeed_config,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        registered_name=args.name,
        register=not args.no_register,
        keep_checkpoint=args.keep_checkpoint,
        overwrite=args.overwrite,
        log_every=args.log_every,
    )
    return finetune(request)


def _export(args: argparse.Namespace, _: list[str]) -> int:
    from pipeline.handoff.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out, args.tag, args.tokenizer, args.overwrite)
    info = json.loads((out / "export_info.json").read_text())
    print(f"exported {info['tag']} (step {info['step']}, ZeRO stage {info['zero_stage']}) -> {out}")
    return 0


class UsageError(BertpipeError):
    """A command line that cannot be carried out; exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    from pipeline.training.train_config import keys_help

    parser = argparse.ArgumentParser(prog="bertpipe", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, engine logs and tracebacks (or BERTPIPE_VERBOSE=1)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model = commands.add_parser("model", help="inspect model presets and checkpoints")
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    info = model_commands.add_parser("info", help="architecture and parameter count")
    info.add_argument("model", help="a preset (tiny, mini, base, large) or a Hugging Face style model directory")
    info.set_defaults(handler=_model_info)

    tokenizer = commands.add_parser("tokenizer", help="WordPiece vocabulary")
    tokenizer_commands = tokenizer.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    train = tokenizer_commands.add_parser("train", help="learn a WordPiece vocabulary from a corpus")
    _add_input_arguments(train)
    train.add_argument("--vocab-size", type=int, default=30522, help="entries, special tokens included")
    train.add_argument("--out", required=True, help="directory for vocab.txt, tokenizer.json, tokenizer_config.json")
    case = train.add_mutually_exclusive_group()
    case.add_argument("--lowercase", dest="lowercase", action="store_true", default=True, help="uncased (default)")
    case.add_argument("--cased", dest="lowercase", action="store_false", help="keep case")
    train.add_argument(
        "--sample-mb",
        type=float,
        default=1024.0,
        help="learn from about this many MB of the stored corpus, drawn evenly across every file (windows of "
        "uncompressed files, every n-th document of compressed ones, row groups of Parquet); all of a smaller corpus",
    )
    train.add_argument("--overwrite", action="store_true", help="replace an existing vocabulary in --out")
    train.set_defaults(handler=_tokenizer_train)

    pre = commands.add_parser(
        "preprocess",
        help="corpus -> pre-masked WebDataset shards (Beam job)",
        description="Options this command does not know are Beam pipeline options, e.g. "
        "--runner=DataflowRunner --project=P --region=R --temp_location=gs://...; without --runner the "
        "local FnApiRunner runs one worker process per core (--direct_num_workers=N to change).",
    )
    _add_input_arguments(pre)
    pre.add_argument("--tokenizer", required=True, help="directory with tokenizer.json or vocab.txt")
    pre.add_argument("--output", required=True, help="dataset directory (local, gs://, s3://)")
    pre.add_argument("--max-seq-length", type=int, default=128, help="tokens per sequence, [CLS] and [SEP]s included")
    pre.add_argument("--max-predictions-per-seq", type=int, default=20, help="most masked positions per sequence")
    pre.add_argument(
        "--masked-lm-prob",
        type=float,
        default=0.15,
        help="share of tokens predicted (80%% [MASK], 10%% random, 10%% kept)",
    )
    pre.add_argument(
        "--short-seq-prob", type=float, default=0.1, help="share of sequences given a shorter random target length"
    )
    pre.add_argument("--dupe-factor", type=int, default=5, help="passes over the corpus with new randomness")
    pre.add_argument("--language", default="en", help="language code for sentence segmentation (sentencex)")
    pre.add_argument("--whole-word-mask", action="store_true", help="mask a word and its ## pieces together")
    pre.add_argument("--validation-fraction", type=float, default=0.01, help="share of documents held out")
    pre.add_argument("--seed", type=int, default=12345, help="pairing, masking and the validation split")
    pre.add_argument("--bucket-mb", type=float, default=2.0, help="input per bucket that random B segments come from")
    pre.add_argument("--shard-mb", type=float, default=64.0, help="target shard size")
    pre.add_argument("--overwrite", action="store_true", help="replace a different dataset in --output")
    pre.set_defaults(handler=_preprocess, beam_passthrough=True)

    train = commands.add_parser(
        "pretrain",
        help="pretrain BERT on a preprocessed dataset with DeepSpeed (one process per rank)",
        description="Run under the deepspeed launcher (launch/pretrain.sh) for several ranks or nodes; "
        "started directly it is a single-rank run.",
        epilog="train.json keys (--set KEY=VALUE; values are JSON where they parse as JSON):\n"
        + keys_help()
        + "\n\nDeepSpeed keys: --set deepspeed.train_micro_batch_size_per_gpu=16, "
        "--set deepspeed.zero_optimization.stage=3, --set deepspeed.optimizer.params.lr=1e-4 (any key of "
        "deepspeed.json; a key DeepSpeed does not know is refused).",
    )
    train.add_argument("--config", required=True, help="config directory (train.json + deepspeed.json) or train.json")
    train.add_argument("--dataset", required=True, help="dataset directory written by `bertpipe preprocess`")
    train.add_argument("--output", required=True, help="run directory: checkpoints, metrics.jsonl, run_status.json")
    train.add_argument(
        "--resume",
        choices=["auto", "never"],
        default="never",
        help="auto: continue from the newest complete checkpoint in --output if there is one",
    )
    train.add_argument("--init-from", help="start from these weights (model directory or a run's checkpoints)")
    train.add_argument("--deepspeed-config", help="DeepSpeed JSON to use instead of the config directory's")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a train.json key (listed below), or a deepspeed.json key as deepspeed.KEY[.SUBKEY]=VALUE",
    )
    train.add_argument("--skip-bad-shards", action="store_true", help="skip and count unreadable shards")
    train.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI, or 'off'; default MLFLOW_TRACKING_URI, else sqlite:///<output>/mlflow.db",
    )
    train.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    train.set_defaults(handler=_pretrain)

    _add_finetune_parser(commands)

    export = commands.add_parser("export", help="DeepSpeed checkpoint -> Hugging Face model directory (fp32)")
    export.add_argument("--checkpoint", required=True, help="a run's output dir, its checkpoints/ dir or a step dir")
    export.add_argument("--tag", help="checkpoint tag (stepNNNNNNNN); default: the one `latest` names")
    export.add_argument("--out", required=True, help="directory for config.json, model.safetensors, tokenizer files")
    export.add_argument("--tokenizer", help="tokenizer directory; default: the run's dataset directory")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    export.set_defaults(handler=_export)

    register = commands.add_parser("register", help="export and register a model version in the MLflow registry")
    what = register.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="a run's output dir (its latest checkpoint), checkpoints/ dir or step dir")
    what.add_argument("--model", help="an exported Hugging Face directory (bertpipe export)")
    register.add_argument("--tag", help="checkpoint tag (stepNNNNNNNN); default: the latest")
    register.add_argument("--name", help="registered model name; default bert-<preset> of the run")
    register.add_argument("--phase", help="phase tag for the version")
    register.add_argument("--run-id", help="MLflow run to log the model in; default: the checkpoint's run")
    register.add_argument(
        "--tracking-uri", help="default MLFLOW_TRACKING_URI, else the run's sqlite:///<output>/mlflow.db"
    )
    register.set_defaults(handler=_register)
    for command in subcommand_parsers(parser):
        command.formatter_class = HelpFormatter
    return parser


def subcommand_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below `parser` (subcommands and their actions), depth first."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += [child, *subcommand_parsers(child)]
    return found


def _add_finetune_parser(commands: Any) -> None:
    tune = commands.add_parser(
        "finetune",
        help="fine-tune a model on classification, NER or extractive QA (DeepSpeed, one process per rank)",
        description="Run under the deepspeed launcher (launch/finetune.sh) for several GPUs or nodes; started "
        "directly it is a single-process run. Writes <output>/model (Hugging Face format), the best epoch's "
        "validation predictions (with --test, the test predictions and metrics too) and metrics.jsonl, and "
        "registers the model as <base>-<task>.",
    )
    tune.add_argument(
        "task", choices=["classify", "ner", "qa"], help="sequence classification, token classification or extractive QA"
    )
    tune.add_argument(
        "--model", required=True, help="models:/NAME@ALIAS, models:/NAME/VERSION, a model dir or a checkpoint"
    )
    tune.add_argument("--train", required=True, help="classify: .csv/.tsv/.jsonl; ner: CoNLL; qa: SQuAD JSON")
    tune.add_argument(
        "--validation", required=True, help="same format as --train; scored after every epoch, picks the best one"
    )
    tune.add_argument(
        "--test",
        metavar="FILE",
        help="same format as --train; the best epoch (chosen on --validation) is scored on it once, and its "
        "test_* metrics and test_predictions.* file are recorded beside the validation ones",
    )
    tune.add_argument("--output", required=True, help="run directory")
    tune.add_argument(
        "--epochs", type=int, default=3, help="passes over --train; the best epoch on --validation is kept"
    )
    tune.add_argument("--learning-rate", type=float, help="peak learning rate (default 5e-5)")
    tune.add_argument("--batch-size", type=int, help="global batch size (default 32)")
    tune.add_argument("--warmup-proportion", type=float, default=0.1, help="share of the steps spent warming up")
    tune.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    tune.add_argument("--max-seq-length", type=int, default=128, help="longer inputs are truncated (QA: windowed)")
    tune.add_argument("--seed", type=int, default=42, help="head initialisation, dropout and batch order")
    tune.add_argument("--from-scratch", action="store_true", help="random weights in the model's architecture")
    tune.add_argument("--tokenizer", help="tokenizer directory; default: the model's")
    tune.add_argument("--deepspeed-config", help="DeepSpeed JSON to use instead of the built-in one")
    tune.add_argument("--tracking-uri", help="MLflow URI or 'off'; default MLFLOW_TRACKING_URI, else the output's")
    tune.add_argument("--experiment", default="bert-finetuning", help="MLflow experiment")
    tune.add_argument("--name", help="registered model name; default <base>-<task>")
    tune.add_argument("--no-register", action="store_true", help="export only; do not register")
    tune.add_argument("--keep-checkpoint", action="store_true", help="keep the best epoch's DeepSpeed checkpoint")
    tune.add_argument("--overwrite", action="store_true", help="replace an earlier run in --output")
    tune.add_argument("--log-every", type=int, default=10, help="steps between training-loss records")
    data = tune.add_argument_group("classification")
    data.add_argument("--text-column", default="text", help="column (CSV/TSV) or field (JSON Lines) with the text")
    data.add_argument("--text-pair-column", help="second text of sentence pairs (segment B)")
    data.add_argument("--label-column", default="label", help="column or field with the label")
    data.add_argument(
        "--truncation",
        choices=["head", "tail", "head+tail"],  # classification_data.TRUNCATIONS, spelled out to import nothing
        default="head",
        help="tokens kept of a text longer than --max-seq-length: the first (head), the last (tail), or the "
        "first quarter and the last three quarters (head+tail); in a pair the longer text gives tokens up first "
        "and each text is cut this way",
    )
    data.add_argument(
        "--map-unseen-label",
        metavar="LABEL",
        help="classify/ner: count validation and test labels training lacks as LABEL",
    )
    qa = tune.add_argument_group("question answering")
    qa.add_argument("--doc-stride", type=int, default=128, help="tokens between the starts of context windows")
    qa.add_argument("--max-query-length", type=int, default=64, help="longer questions are truncated")
    qa.add_argument("--n-best", type=int, default=20, help="start and end candidates per window")
    qa.add_argument("--max-answer-length", type=int, default=30, help="in tokens")
    qa.add_argument("--null-threshold", type=float, default=0.0, help="SQuAD 2.0: no-answer margin")
    version = qa.add_mutually_exclusive_group()
    version.add_argument("--version-2", dest="version_2", action="store_true", default=None, help="allow no answer")
    version.add_argument("--version-1", dest="version_2", action="store_false", help="always answer")
    tune.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    tune.set_defaults(handler=_finetune)


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", required=True, nargs="+", help="file globs (local, gs://, s3://); .gz, .bz2, .xz, .zst decompressed"
    )
    parser.add_argument("--format", choices=["text", "jsonl", "parquet"], help="default: from the file names")
    parser.add_argument("--text-field", default="text", help="JSON Lines field / Parquet column with the text")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "beam_passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from pipeline import logs

    logs.configure(args.verbose)
    args.verbose = logs.verbose_requested(args.verbose)
    handler: Handler = args.handler
    try:
        return handler(args, extra)
    except BertpipeError as error:  # anything else is a bug and keeps its traceback
        if args.verbose:
            raise
        return report(error)


if __name__ == "__main__":
    sys.exit(main())
