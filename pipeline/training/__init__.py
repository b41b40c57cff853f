"""The training runtime: the pretraining job (`pretrain`), the run harness both training loops use (`run`:
run directory, status file, stop on SIGTERM/SIGINT, metrics reporter), its typed settings (`train_config`,
`schedule`, `deepspeed_config`), process groups (`distributed`, `cpu_ops` for DeepSpeed's CPU op build),
checkpoints and the weights read from them (`checkpointing`, `weights`), evaluation (`evaluate`,
`context_probe`) and `metrics.jsonl` (`metrics`). It may import `data`, `handoff` (tracking, the model
source, registering a checkpoint), `pipeline.logs`, `model/` and `preprocessing/`; never `launch` or the CLI,
which start it.
"""
