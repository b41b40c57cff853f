#!/usr/bin/env bash
""":"
# BERT pretraining under the deepspeed launcher, on one machine or many.
#
#   launch/pretrain.sh --phase 1 --dataset data/seq128 --output runs/large [--resume auto]
#   launch/pretrain.sh --phase 2 --dataset data/seq512 --output runs/large-p2 --init-from runs/large
#
# Options of this script:
#   --phase 1|2|tiny      the config: 1 (BERT-Large, seq 128), 2 (BERT-Large, seq 512) or tiny (CPU), from
#                         launch/configs/<phase1|phase2|tiny>; or
#   --config DIR          any other config directory (train.json + deepspeed.json)
#   --output DIR          the run directory; required
#   -h, --help            this text, then the options of `bertpipe pretrain`
# Launcher options:
#   --nodes N             nodes to use from the hostfile (default: all of them)
#   --gpus-per-node G     ranks per node (default: every GPU; on CPU, DS_ACCELERATOR=cpu, 1)
#   --master-addr A       rank 0's address (default: the first host of the hostfile)
#   --master-port P       (default 29500; pick another where that one is taken)
#   --no-ssh --node-rank R  start this node's ranks only; run the same command on every node
#                           (clusters without ssh between nodes; under srun R defaults to SLURM_NODEID)
#   --launcher L          DeepSpeed's multi-node backend: pdsh (default; needs pdsh and ssh on this node),
#                         openmpi, mvapich, slurm, mpich or impi
#   --ssh-port P          ssh port of the other nodes (pdsh)
#   --no-ssh-check        skip DeepSpeed's passwordless-ssh probe of the first host
#   --print-command       print the launcher command line and exit
#   --verbose             DeepSpeed's and the engines' INFO logs too (or BERTPIPE_VERBOSE=1)
# HOSTFILE names the DeepSpeed hostfile (lines "host slots=G"; default launch/hostfile; see
# launch/hostfile.example); without one the run is single-node. Inside a Slurm allocation
# (SLURM_JOB_NODELIST set, no HOSTFILE) the hostfile is built from the allocation.
# Everything else goes to `bertpipe pretrain` (listed by --help).
#
# SIGTERM or SIGINT to this script reaches every rank: they finish the current step, write a
# checkpoint, and the script exits 0. `--resume auto` continues from it.
#
# Over ssh, the ranks on other nodes get this node's BERTPIPE_*, DS_ACCELERATOR, HF_*, TRANSFORMERS_*,
# TORCH_*, GLOO_* and OMP_NUM_THREADS (through a DeepSpeed environment file written to <output>/launch.env,
# which also holds the lines of your DS_ENV_FILE or ~/.deepspeed_env); DeepSpeed itself forwards MLFLOW_*,
# PYTHON*, NCCL_* and a few more. Credentials are not forwarded: give each node its own.
#
# Started by the launcher itself (`deepspeed --no_python launch/pretrain.sh ...`, which sets RANK and
# LOCAL_RANK for each rank), the script hands over to the trainer. The launch logic is pipeline/launch/launcher.py.
# BERTPIPE_PYTHON names the Python to use (default: the project's .venv, else python3 on PATH). The file's
# end is Python too: `deepspeed launch/pretrain.sh ...` without --no_python runs the file with Python.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/python.sh" && hand_over "$@"
":"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from pipeline.launch.launcher import run_script; run_script(__file__)

