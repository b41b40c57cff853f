#!/usr/bin/env bash
# BERT pretraining under the deepspeed launcher, on one machine or many.
#
#   launch/pretrain.sh --phase 1 --dataset data/seq128 --output runs/large [--resume auto]
#   launch/pretrain.sh --phase 2 --dataset data/seq512 --output runs/large-p2 --init-from runs/large
#
# Phase: 1 (BERT-Large, seq 128), 2 (BERT-Large, seq 512) or tiny (CPU) picks launch/configs/<phase1|phase2|tiny>;
# --config DIR picks any other. Launcher options:
#   --nodes N             nodes to use from the hostfile (default: all of them)
#   --gpus-per-node G     ranks per node (default: every GPU; on CPU, DS_ACCELERATOR=cpu, 1)
#   --master-addr A       rank 0's address (default: the first host of the hostfile)
#   --master-port P       (default 29500; pick another where that one is taken)
#   --no-ssh --node-rank R  start this node's ranks only; run the same command on every node
#                           (clusters without ssh between nodes; under srun R defaults to SLURM_NODEID)
#   --print-command       print the launcher command line and exit
# HOSTFILE names the DeepSpeed hostfile (lines "host slots=G"; default launch/hostfile; see
# launch/hostfile.example); without one the run is single-node. Inside a Slurm allocation
# (SLURM_JOB_NODELIST set, no HOSTFILE) the hostfile is built from the allocation.
# Everything else goes to `bertpipe pretrain` (see `bertpipe pretrain --help`).
#
# SIGTERM or SIGINT to this script reaches every rank: they finish the current step, write a
# checkpoint, and the script exits 0. `--resume auto` continues from it.
#
# Started by the launcher itself (`deepspeed --no_python launch/pretrain.sh ...`, which sets RANK and
# LOCAL_RANK for each rank), the script hands over to the trainer.
# BERTPIPE_PYTHON names the Python to use (default: the project's .venv, else python3 on PATH).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${BERTPIPE_PYTHON:-$root/.venv/bin/python}
[[ -x $python ]] || python=$(command -v python3) || {
  echo "pretrain.sh: no python found; run 'make install' or set BERTPIPE_PYTHON" >&2
  exit 2
}

die() { echo "pretrain.sh: $*" >&2; exit 2; }

phase=
config=
output=
nodes=
gpus=
master_addr=
master_port=${MASTER_PORT:-29500}
no_ssh=0
node_rank=${SLURM_NODEID:-}
print_only=0
trainer_args=()
while (($#)); do
  case $1 in
    --phase) phase=${2:?--phase needs 1, 2 or tiny}; shift 2 ;;
    --config) config=${2:?--config needs a directory}; shift 2 ;;
    --output) output=${2:?--output needs a directory}; trainer_args+=(--output "$2"); shift 2 ;;
    --nodes) nodes=${2:?}; shift 2 ;;
    --gpus-per-node) gpus=${2:?}; shift 2 ;;
    --master-addr) master_addr=${2:?}; shift 2 ;;
    --master-port) master_port=${2:?}; shift 2 ;;
    --no-ssh) no_ssh=1; shift ;;
    --print-command) print_only=1; shift ;;
    --node-rank) node_rank=${2:?}; shift 2 ;;
    --local_rank=*) shift ;;  # the launcher's; the trainer reads LOCAL_RANK
    *) trainer_args+=("$1"); shift ;;
  esac
done

if [[ -z $config ]]; then
  case $phase in
    1) config=$root/launch/configs/phase1 ;;
    2) config=$root/launch/configs/phase2 ;;
    tiny) config=$root/launch/configs/tiny ;;
    "") die "give --phase 1, 2 or tiny, or --config DIR" ;;
    *) die "--phase must be 1, 2 or tiny, got '$phase'" ;;
  esac
fi
[[ -d $config ]] || die "config directory $config does not exist"
[[ -n $output ]] || die "--output DIR is required"

# Rank mode: the launcher started us once per rank.
if [[ -n ${RANK:-} && -n ${LOCAL_RANK:-} ]]; then
  exec "$python" -m pipeline.cli pretrain --config "$config" "${trainer_args[@]}"
fi

# Driver mode: build the launcher command.
launcher=("$python" -m deepspeed.launcher.runner --master_port "$master_port")
hostfile=${HOSTFILE:-}
if [[ -z $hostfile && -n ${SLURM_JOB_NODELIST:-} ]]; then
  mkdir -p "$output"
  hostfile=$output/hostfile.slurm
  slots=${gpus:-${SLURM_GPUS_ON_NODE:-1}}
  first=$("$python" -m pipeline.hostfile --slots "${slots%%(*}" --out "$hostfile") || exit 2
  master_addr=${master_addr:-$first}
fi
hostfile=${hostfile:-$root/launch/hostfile}
if [[ -f $hostfile ]]; then
  launcher+=(--hostfile "$hostfile")
  [[ -n $master_addr ]] || master_addr=$(awk 'NF && $1 !~ /^#/ {print $1; exit}' "$hostfile")
elif [[ -n ${HOSTFILE:-} ]]; then
  die "HOSTFILE=$HOSTFILE does not exist"
fi
[[ -n $nodes ]] && launcher+=(--num_nodes "$nodes")
if [[ -z $gpus && ${DS_ACCELERATOR:-} == cpu ]]; then
  gpus=1
fi
[[ -n $gpus ]] && launcher+=(--num_gpus "$gpus")
[[ -n $master_addr ]] && launcher+=(--master_addr "$master_addr")
if ((no_ssh)); then
  [[ -n $node_rank ]] || die "--no-ssh needs --node-rank R (this node's index in the hostfile)"
  launcher+=(--no_ssh --node_rank "$node_rank")
fi

launcher+=(--no_python --no_local_rank "$root/launch/pretrain.sh" --config "$config" "${trainer_args[@]}")
if ((print_only)); then
  printf '%q ' "${launcher[@]}"
  echo
  exit 0
fi

if [[ ${DS_ACCELERATOR:-} == cpu ]]; then
  # DeepSpeed compiles a shared-memory op at its first CPU run; build it once here rather than in
  # every rank at the same time.
  "$python" -m pipeline.cpu_ops || exit 1
fi
echo "pretrain.sh: ${launcher[*]}" >&2

# The launcher runs in its own process group, so that a signal to this script reaches every process
# of the run (the deepspeed runner alone does not pass signals on when it starts ranks locally).
set -m
"${launcher[@]}" &
group=$!
set +m
signalled=0
forward() {
  signalled=1
  kill -TERM -- "-$group" 2>/dev/null || true
}
trap forward TERM INT

code=0
wait "$group" || code=$?
while kill -0 -- "-$group" 2>/dev/null; do  # ranks may still be writing their checkpoint
  wait "$group" 2>/dev/null || true
  sleep 0.5
done

if ((signalled)); then
  state=$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["state"])' "$output/run_status.json" 2>/dev/null || true)
  if [[ $state == interrupted ]]; then
    echo "pretrain.sh: stopped by a signal after writing a checkpoint; continue with --resume auto" >&2
    exit 0
  fi
  echo "pretrain.sh: stopped by a signal; no checkpoint was written at the stop (run state: ${state:-unknown})" >&2
  exit 1
fi
exit "$code"
