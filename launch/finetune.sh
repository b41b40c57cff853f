#!/usr/bin/env bash
""":"
# Fine-tuning under the deepspeed launcher on one or many GPUs and nodes; one process on CPU.
#
#   launch/finetune.sh classify --model models:/bert-large@champion --train train.csv --validation dev.csv \
#       --output runs/sst2 [--gpus-per-node 8] [--nodes 2]
#   launch/finetune.sh ner --model models:/bert-large@champion --train train.conll --validation dev.conll --output runs/ner
#   launch/finetune.sh qa --model models:/bert-large@champion --train train-v2.0.json --validation dev-v2.0.json \
#       --output runs/squad2 --max-seq-length 384 --doc-stride 128
#
# Launcher options (everything else goes to `bertpipe finetune TASK`, listed by --help):
#   --gpus-per-node G   ranks per node (default: every GPU; with DS_ACCELERATOR=cpu, 1: a plain process)
#   --nodes N           nodes to use from the hostfile (default: all of them)
#   --master-addr A     rank 0's address (default: the first host of the hostfile)
#   --master-port P     (default 29500)
#   --no-ssh --node-rank R  start this node's ranks only; run the same command on every node
#   --launcher L        DeepSpeed's multi-node backend (pdsh, openmpi, mvapich, slurm, mpich, impi)
#   --ssh-port P        ssh port of the other nodes (pdsh)
#   --no-ssh-check      skip DeepSpeed's passwordless-ssh probe of the first host
#   --print-command     print the command line and exit
#   --verbose           DeepSpeed's and the engines' INFO logs too (or BERTPIPE_VERBOSE=1)
#   -h, --help          this text, then the options of `bertpipe finetune`
# HOSTFILE names the DeepSpeed hostfile (default launch/hostfile, if present; see launch/hostfile.example);
# inside a Slurm allocation the hostfile is built from it. SIGTERM or SIGINT reaches every rank. The same
# launcher as launch/pretrain.sh (pipeline/launch/launcher.py): see there for what is forwarded to other nodes.
# BERTPIPE_PYTHON names the Python to use (default: the project's .venv, else python3 on PATH). The file's
# end is Python too: `deepspeed launch/finetune.sh ...` without --no_python runs the file with Python.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/python.sh" && hand_over "$@"
":"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from pipeline.launch.launcher import run_script; run_script(__file__)

