#!/usr/bin/env bash
# Fine-tuning under the deepspeed launcher on one or many GPUs and nodes; one process on CPU.
#
#   launch/finetune.sh classify --model models:/bert-large@champion --train train.csv --validation dev.csv \
#       --output runs/sst2 [--gpus-per-node 8] [--nodes 2]
#   launch/finetune.sh ner --model models:/bert-large@champion --train train.conll --validation dev.conll --output runs/ner
#   launch/finetune.sh qa --model models:/bert-large@champion --train train-v2.0.json --validation dev-v2.0.json \
#       --output runs/squad2 --max-seq-length 384 --doc-stride 128
#
# Launcher options (everything else goes to `bertpipe finetune TASK`, see `bertpipe finetune --help`):
#   --gpus-per-node G   ranks per node (default: every GPU; with DS_ACCELERATOR=cpu, 1: a plain process)
#   --nodes N           nodes to use from the hostfile (default: all of them)
#   --master-addr A     rank 0's address (default: the first host of the hostfile)
#   --master-port P     (default 29500)
#   --print-command     print the command line and exit
# HOSTFILE names the DeepSpeed hostfile (default launch/hostfile, if present; see launch/hostfile.example).
# BERTPIPE_PYTHON names the Python to use (default: the project's .venv, else python3 on PATH).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${BERTPIPE_PYTHON:-$root/.venv/bin/python}
[[ -x $python ]] || python=$(command -v python3) || {
  echo "finetune.sh: no python found; run 'make install' or set BERTPIPE_PYTHON" >&2
  exit 2
}
die() { echo "finetune.sh: $*" >&2; exit 2; }

task=${1:-}
case $task in
  classify | ner | qa) shift ;;
  *) die "the first argument is the task: classify, ner or qa (got '${task}')" ;;
esac

gpus=
nodes=
master_addr=
master_port=${MASTER_PORT:-29500}
print_only=0
args=()
while (($#)); do
  case $1 in
    --gpus-per-node) gpus=${2:?--gpus-per-node needs a number}; shift 2 ;;
    --nodes) nodes=${2:?--nodes needs a number}; shift 2 ;;
    --master-addr) master_addr=${2:?}; shift 2 ;;
    --master-port) master_port=${2:?}; shift 2 ;;
    --print-command) print_only=1; shift ;;
    --local_rank=*) shift ;;  # the launcher's; the job reads LOCAL_RANK
    *) args+=("$1"); shift ;;
  esac
done

job=("$python" -m pipeline.cli finetune "$task" "${args[@]}")

# Rank mode (the launcher started us once per rank), or a single CPU process.
hostfile=${HOSTFILE:-$root/launch/hostfile}
[[ -n ${HOSTFILE:-} && ! -f $hostfile ]] && die "HOSTFILE=$HOSTFILE does not exist"
single=0
if [[ -n ${RANK:-} && -n ${LOCAL_RANK:-} ]]; then
  single=1
elif [[ ${DS_ACCELERATOR:-} == cpu && ${gpus:-1} == 1 && ! -f $hostfile ]]; then
  single=1
fi
if ((single)); then
  if ((print_only)); then
    printf '%q ' "${job[@]}"
    echo
    exit 0
  fi
  exec "${job[@]}"
fi

launcher=("$python" -m deepspeed.launcher.runner --master_port "$master_port")
if [[ -f $hostfile ]]; then
  launcher+=(--hostfile "$hostfile")
  [[ -n $master_addr ]] || master_addr=$(awk 'NF && $1 !~ /^#/ {print $1; exit}' "$hostfile")
fi
[[ -n $nodes ]] && launcher+=(--num_nodes "$nodes")
[[ -n $gpus ]] && launcher+=(--num_gpus "$gpus")
[[ -n $master_addr ]] && launcher+=(--master_addr "$master_addr")
launcher+=(--no_python --no_local_rank "$root/launch/finetune.sh" "$task" "${args[@]}")
if ((print_only)); then
  printf '%q ' "${launcher[@]}"
  echo
  exit 0
fi
if [[ ${DS_ACCELERATOR:-} == cpu ]]; then
  "$python" -m pipeline.cpu_ops || exit 1  # build DeepSpeed's CPU op once, not in every rank at once
fi
echo "finetune.sh: ${launcher[*]}" >&2
exec "${launcher[@]}"
