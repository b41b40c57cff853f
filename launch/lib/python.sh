# shellcheck shell=bash
# Sourced by the launch scripts: $root (the checkout) and $python (BERTPIPE_PYTHON, else the project's .venv,
# else python3 on PATH), or exit 2 saying what to do; `usage`, which prints the calling script's header
# comment (its one description, read by --help); and `hand_over`, which replaces the calling script with
# `python -m pipeline.launch.launcher <the script's name> ARGS` (pretrain.sh: the pretrain job).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
python=${BERTPIPE_PYTHON:-$root/.venv/bin/python}
if [[ ! -x $python ]]; then
  python=$(command -v python3) || {
    echo "$(basename "$0"): no python found; run 'make install' or set BERTPIPE_PYTHON" >&2
    exit 2
  }
fi

usage() { sed -n '2,/^set -euo pipefail/{/^#/s/^# \{0,1\}//p}' "$0"; }
hand_over() { PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m pipeline.launch.launcher "$(basename "$0" .sh)" "$@"; }
