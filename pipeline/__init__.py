"""Training and fine-tuning runtime, and the `bertpipe` command line (`cli`, with `logs` for its logging).

The subpackages, in the order data flows through them: `data` (reading and batching a dataset), `training`
(the pretraining loop and the run harness it shares with fine-tuning), `handoff` (MLflow tracking, export,
registry), `finetune` (the downstream tasks), `launch` (what the shell scripts under launch/ run), `demo`
(`make demo`).
"""
