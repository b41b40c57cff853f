"""Reading a preprocessed dataset: the manifest checks against the model (`dataset_check`), each stream's
plan of shards (`data_plan`), the shard reader with its sha256 check (`shard_reader`), collation and dynamic
re-masking (`collate`), packing several instances per row (`packing`), and the DataLoader they make up
(`loader`). It imports `model/` and `preprocessing/` only: never DeepSpeed, MLflow or apache_beam, so that
reading a dataset (a benchmark, a fine-tuning job, a test) pulls none of them in. The one reach outside,
`dataset_check` finding the tokenizer a checkpoint was trained with, imports `training.weights` inside
the function that needs it.
"""
