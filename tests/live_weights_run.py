"""Train a tiny model two steps under DeepSpeed (world size 1, CPU) at a given ZeRO stage, save a trainer
checkpoint and the live fp32 weights beside it: the reference an export must reproduce.

    python tests/live_weights_run.py DATASET OUTPUT STAGE
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(dataset: str, output: str, stage: int) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(
        DS_ACCELERATOR="cpu", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    import deepspeed
    import torch
    from safetensors.torch import save_file

    from model import BertConfig, BertForPreTraining
    from pipeline.data.dataset_check import load_manifest
    from pipeline.data.loader import SplitSpec, evaluation_batches
    from pipeline.training import checkpointing, deepspeed_config

    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    manifest = load_manifest(dataset)
    config = BertConfig.from_preset("tiny", vocab_size=manifest.tokenizer.vocab_size)
    torch.manual_seed(0)
    model = BertForPreTraining(config)
    ds = {
        "train_micro_batch_size_per_gpu": 8,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": stage},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-2}},
    }
    ds, spec, _ = deepspeed_config.prepare(ds, 1, on_gpu=False)
    optimizer = deepspeed_config.build_adamw(deepspeed_config.parameter_groups(model, 0.01), spec, on_gpu=False)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds)
    batches = evaluation_batches(SplitSpec.from_manifest(dataset, manifest, "train"), 8, 0, 1, 16)
    for batch in batches[:2]:
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
    client_state = {"step": 2, "model_config": config.to_dict(), "dataset": dataset, "world_size": 1}
    rank_state = {"rng": checkpointing.rng_states(), "data": {}}
    assert checkpointing.save(engine, Path(output) / "checkpoints", 2, client_state, rank_state, 3, engine.device)
    parameters = dict(engine.module.named_parameters())
    with deepspeed.zero.GatheredParameters(list(parameters.values()), enabled=stage == 3):
        live = {name: param.detach().float().clone().contiguous() for name, param in parameters.items()}
    save_file(live, str(Path(output) / "live_weights.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
