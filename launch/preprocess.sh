#!/usr/bin/env bash
# Corpus -> pre-masked WebDataset shards for one training phase (the Beam job).
#
#   launch/preprocess.sh --phase 1 --input 'corpus/*.txt.gz' --tokenizer tok/ --output data/
#       phase 1: max_seq_length 128, 20 predictions per sequence -> data/seq128
#       phase 2: max_seq_length 512, 80 predictions per sequence -> data/seq512
#
# Every other option goes to `bertpipe preprocess` (see `bertpipe preprocess --help`), and options it
# does not know go to Beam, e.g. --runner=DataflowRunner --project=P --region=R
# --temp_location=gs://bucket/tmp. Without --runner, Beam's local runner (FnApiRunner) runs one worker
# process per core.
# BERTPIPE names the bertpipe executable (default: the project's .venv, else the one on PATH).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bertpipe=${BERTPIPE:-$root/.venv/bin/bertpipe}
[[ -x $bertpipe ]] || bertpipe=$(command -v bertpipe) || {
  echo "preprocess.sh: no bertpipe found; run 'make install' or set BERTPIPE" >&2
  exit 2
}

phase=1
output=
args=()
while (($#)); do
  case $1 in
    --phase) phase=${2:?--phase needs 1 or 2}; shift 2 ;;
    --phase=*) phase=${1#*=}; shift ;;
    --output) output=${2:?--output needs a directory}; shift 2 ;;
    --output=*) output=${1#*=}; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
[[ -n $output ]] || { echo "preprocess.sh: --output DIR is required" >&2; exit 2; }

case $phase in
  1) seq=128 predictions=20 ;;
  2) seq=512 predictions=80 ;;
  *) echo "preprocess.sh: --phase must be 1 (seq 128) or 2 (seq 512), got '$phase'" >&2; exit 2 ;;
esac

# Phase defaults come first so that an explicit --max-seq-length etc. in the arguments wins.
exec "$bertpipe" preprocess --max-seq-length "$seq" --max-predictions-per-seq "$predictions" \
  --output "${output%/}/seq$seq" "${args[@]}"
