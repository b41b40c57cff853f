"""What launch/pretrain.sh and launch/finetune.sh run (`python -m pipeline.launch.launcher`): the launcher's
option handling, the checks before a start, DeepSpeed's launcher over ssh or pdsh, signal forwarding
(`launcher`), and hostfiles from Slurm node lists (`hostfile`). It starts the training jobs as processes
rather than importing them: beside `preprocessing.errors` it imports only the CLI's parser (for help text)
and `handoff.tracking`'s exit code, both inside the functions that need them.
"""
