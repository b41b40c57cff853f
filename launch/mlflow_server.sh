#!/usr/bin/env bash
# An MLflow tracking server for pretraining and fine-tuning runs.
#
#   launch/mlflow_server.sh                      # sqlite + local artifacts under ./mlruns-server, 127.0.0.1:5000
#   launch/mlflow_server.sh --port 5050 --dir /shared/mlflow --host 0.0.0.0
#   launch/mlflow_server.sh --backend-store-uri postgresql://user@db/mlflow --artifacts-destination s3://bucket/mlflow
#   launch/mlflow_server.sh --background         # returns once it answers; pid in DIR/server.pid, log in DIR/server.log
#
# Options:
#   --port P                    (default 5000)
#   --host H                    interface to bind (default 127.0.0.1; 0.0.0.0 for other nodes, which also
#                               need --allowed-hosts, see `mlflow server --help`)
#   --dir DIR                   where the default store, artifacts, pid file and log live (default ./mlruns-server)
#   --backend-store-uri URI     any SQLAlchemy database URI (default sqlite:///DIR/mlflow.db)
#   --artifacts-destination URI local path or object store, e.g. s3://bucket/path (default DIR/mlartifacts)
#   --background                start, wait until it answers, print the URI and exit
#   --pid-file FILE             (with --background; default DIR/server.pid)
#   --wait S                    seconds to wait for /health (default 120)
#   -h, --help                  this text
# Every other option goes to `mlflow server` (e.g. --workers 1, --allowed-hosts).
#
# Once the server answers on /health, the tracking URI (e.g. http://127.0.0.1:5000) is printed on stdout:
#   export MLFLOW_TRACKING_URI=$(launch/mlflow_server.sh --background)
# In the foreground, SIGTERM or SIGINT stops the server and its workers, and the script exits 0 once they have
# exited. In the background, the server leads its own process group: `kill -- -$(cat DIR/server.pid)` stops
# it and its workers.
# MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false skips MLflow's job runner (GenAI features that training runs do
# not use) and starts faster.
# BERTPIPE_PYTHON names the Python to use (default: the project's .venv, else python3 on PATH).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib/python.sh"

die() { echo "mlflow_server.sh: $*" >&2; exit 2; }

port=5000
host=127.0.0.1
dir=./mlruns-server
backend=
artifacts=
background=0
pid_file=
wait_s=120
extra=()
while (($#)); do
  case $1 in
    --port) port=${2:?--port needs a number}; shift 2 ;;
    --host) host=${2:?--host needs an address}; shift 2 ;;
    --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
    --backend-store-uri) backend=${2:?--backend-store-uri needs a URI}; shift 2 ;;
    --artifacts-destination) artifacts=${2:?--artifacts-destination needs a URI}; shift 2 ;;
    --background) background=1; shift ;;
    --pid-file) pid_file=${2:?--pid-file needs a path}; shift 2 ;;
    --wait) wait_s=${2:?--wait needs seconds}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) extra+=("$1"); shift ;;
  esac
done
[[ $port =~ ^[0-9]+$ ]] || die "--port must be a number, got '$port'"

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
backend=${backend:-sqlite:///$dir/mlflow.db}
artifacts=${artifacts:-$dir/mlartifacts}
pid_file=${pid_file:-$dir/server.pid}

# Where this machine reaches the server, and the URI clients use.
case $host in
  0.0.0.0 | "::" | "") probe=127.0.0.1 public=$(hostname -f 2>/dev/null || hostname) ;;
  *:*) probe="[$host]" public="[$host]" ;;
  *) probe=$host public=$host ;;
esac
uri=http://$public:$port

# A server already on the port would answer /health and pass for ours.
"$python" - "$host" "$port" 2>/dev/null <<'EOF' || die "port $port on ${host:-0.0.0.0} is taken; pick another with --port"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
with socket.socket(family) as sock:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
EOF

command=("$python" -m mlflow server --host "$host" --port "$port" --backend-store-uri "$backend"
  --artifacts-destination "$artifacts" "${extra[@]}")

# The server gets its own process group: it starts workers, and a stop must reach all of them.
set -m
if ((background)); then
  nohup "${command[@]}" >>"$dir/server.log" 2>&1 </dev/null &
else
  "${command[@]}" >&2 </dev/null &
fi
server=$!
set +m

# Whether a process of group $1 is still running (a zombie has exited; its parent may be gone). MLflow's job
# runner starts its consumers seconds after the server answers, and they take seconds to exit after the
# server has: a stop waits for the whole group.
group_running() {
  [[ -d /proc/self ]] || { kill -0 -- "-$1" 2>/dev/null; return; }
  local stat line fields
  for stat in /proc/[0-9]*/stat; do
    { read -r line <"$stat"; } 2>/dev/null || continue
    read -r -a fields <<<"${line##*) }"  # after the command name: state, parent, group, ...
    [[ ${fields[2]} == "$1" && ${fields[0]} != Z ]] && return 0
  done
  return 1
}

stop() {
  kill -TERM -- "-$server" 2>/dev/null || return 0  # the server and every worker it started
  for _ in $(seq 1 60); do
    group_running "$server" || return 0
    sleep 0.5
  done
  kill -KILL -- "-$server" 2>/dev/null || true
}

# Until it answers, a signal stops the server and fails the start; the check runs in the background so
# that `wait` (unlike a foreground command) lets the trap run at once.
trap 'stop; exit 1' TERM INT
"$python" - "http://$probe:$port/health" "$server" "$wait_s" <<'EOF' &
import os, sys, time, urllib.request
url, pid, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(f"mlflow_server.sh: the server exited before answering on {url}")
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.3)
sys.exit(f"mlflow_server.sh: no answer on {url} after {sys.argv[3]} s")
EOF
if ! wait $!; then
  stop
  ((background)) && echo "mlflow_server.sh: see $dir/server.log" >&2
  exit 1
fi
trap - TERM INT

# What is printed never holds a password: scheme://user:secret@host -> scheme://user:***@host.
redact() { sed -E 's#^([A-Za-z][A-Za-z0-9+.-]*://[^/:@]*):[^/]*@#\1:***@#' <<<"$1"; }
shown_backend=$(redact "$backend")
shown_artifacts=$(redact "$artifacts")

if ((background)); then
  echo "$server" >"$pid_file"
  echo "mlflow_server.sh: server $server on $uri (store $shown_backend, artifacts $shown_artifacts); pid in $pid_file, log in $dir/server.log" >&2
  echo "$uri"
  exit 0
fi

echo "mlflow_server.sh: serving $uri (store $shown_backend, artifacts $shown_artifacts); SIGTERM or Ctrl-C stops it" >&2
echo "$uri"
signalled=0
trap 'signalled=1; stop' TERM INT
code=0
wait "$server" || code=$?
while kill -0 "$server" 2>/dev/null; do  # a trapped signal interrupts wait; the server may still be stopping
  wait "$server" 2>/dev/null || true
done
if ((signalled)); then
  echo "mlflow_server.sh: stopped" >&2
  exit 0
fi
echo "mlflow_server.sh: the server exited with status $code" >&2
exit "$code"
