#!/usr/bin/env bash
# Corpus -> pre-masked WebDataset shards for one training phase (the Beam job).
#
#   launch/preprocess.sh --phase 1 --input 'corpus/*.txt.gz' --tokenizer tok/ --output data/
#   launch/preprocess.sh --phase 2 --input 's3://bucket/corpus/*.jsonl' --tokenizer tok/ --output s3://bucket/data \
#       --runner=DataflowRunner --project=P --region=R --temp_location=gs://bucket/tmp
#
# Options of this script:
#   --phase 1|2     1 (default): max_seq_length 128, 20 predictions per sequence -> DIR/seq128
#                   2: max_seq_length 512, 80 predictions per sequence -> DIR/seq512
#   --output DIR    where the phase's dataset directory goes (local, s3://, gs://); required
#   -h, --help      this text, then the options of `bertpipe preprocess`
# Every other option goes to `bertpipe preprocess` (an explicit --max-seq-length etc. wins over the phase's),
# and options it does not know go to Beam. Without --runner, Beam's local runner (FnApiRunner) runs one
# worker process per core (at most 8).
# Environment: BERTPIPE names the bertpipe executable (default: the project's .venv, else the one on PATH).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/python.sh"
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
    -h | --help)
      usage
      printf '\nThe options of bertpipe preprocess:\n\n'
      exec "$bertpipe" preprocess --help ;;
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
