"""What a run hands on and records: MLflow tracking of runs (`tracking`), export of a ZeRO checkpoint to a
Hugging Face directory (`export`), the model registry with its champion alias (`registry`) and the pyfunc
model it logs (`mlflow_pyfunc`), resolving a model named by a path, a run or `models:/...` (`model_source`),
and removing passwords from what is logged (`redaction`). It may import `training.checkpointing` and
`training.weights` (to read checkpoints), `finetune`'s pure task modules (the pyfunc's predictions),
`model/` and `preprocessing/`; never `data`, `launch` or the CLI.
"""
