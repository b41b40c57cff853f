"""`bertpipe`: the one command-line entry point; each step of the pipeline is a subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


def _model_info(args: argparse.Namespace) -> int:
    """Print the architecture and parameter count of a preset or a model directory."""
    import torch

    from model import PRESETS, BertConfig, BertForPreTraining

    if args.model in PRESETS:
        config = BertConfig.from_preset(args.model)
    elif Path(args.model).is_dir():
        config = BertConfig.from_pretrained(args.model)
    else:
        print(
            f"error: {args.model!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a model directory",
            file=sys.stderr,
        )
        return 2
    with torch.device("meta"):  # count without allocating weights
        parameters = BertForPreTraining(config).num_parameters()
    print(
        f"layers={config.num_hidden_layers} hidden={config.hidden_size} heads={config.num_attention_heads} "
        f"ffn={config.intermediate_size} vocab={config.vocab_size} "
        f"max_positions={config.max_position_embeddings}"
    )
    print(f"parameters (BertForPreTraining, tied decoder counted once): {parameters:,}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertpipe", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model = commands.add_parser("model", help="inspect model presets and checkpoints")
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    info = model_commands.add_parser("info", help="architecture and parameter count")
    info.add_argument(
        "model", help="a preset (tiny, mini, base, large) or a Hugging Face style model directory"
    )
    info.set_defaults(handler=_model_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
