# shellcheck shell=bash
# What scripts/s3.sh and scripts/kms.sh share: a throwaway test server built from the Go
# module proxy into $CARNET_CACHE/bin, run in its own process group with a data folder of
# its own under $TMPDIR, found again by its pid file and stopped by pid only.
#
# Source it after setting:
#   SERVER_NAME   name in messages ("MinIO")     SERVER_BIN  the binary's path
#   GO_MODULE     module path to `go install`    GO_VERSION  its (pseudo-)version
#   STATE_DIR     pid, log and data-folder path  DATA_PREFIX data folders are $TMPDIR/$DATA_PREFIX.XXXXXX
#   URL           where it answers
#   PID_FILE, LOG_FILE (optional, under $STATE_DIR by default)
# and defining `log` (messages to stderr) and `ready` (exit 0 once it serves requests).

PID_FILE="${PID_FILE:-$STATE_DIR/server.pid}"
LOG_FILE="${LOG_FILE:-$STATE_DIR/server.log}"
DATA_FILE="$STATE_DIR/data-dir"

die() { log "$*"; exit 1; }

running_pid() {
  # The pid from the pid file, if that process is alive and is our binary.
  [[ -s "$PID_FILE" ]] || return 1
  local pid
  pid=$(<"$PID_FILE")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$SERVER_BIN" ]] || return 1
  echo "$pid"
}

built() {
  [[ -x "$SERVER_BIN" && "$(cat "$SERVER_BIN.version" 2>/dev/null)" == "$GO_VERSION" ]]
}

build() {
  built && return 0
  # The official Go tarball's place, for shells whose PATH lacks it (CI, cron).
  command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null || die "go not found: $SERVER_NAME is built with the Go toolchain (>= 1.24)"
  command -v flock >/dev/null || die "flock not found (apt-get install -y util-linux)"
  local bin_dir
  bin_dir=$(dirname "$SERVER_BIN")
  mkdir -p "$bin_dir"
  # Two concurrent starts must not build at once: the second waits, then finds the binary.
  exec 9>"$SERVER_BIN.build-lock"
  flock 9
  if built; then
    exec 9>&-
    return 0
  fi
  log "building $GO_MODULE@$GO_VERSION into $bin_dir"
  local started=$SECONDS
  # CGO off: static binaries, as the projects' own releases; -trimpath keeps local paths out.
  CGO_ENABLED=0 GOBIN="$bin_dir" GOFLAGS="-trimpath -buildvcs=false" \
    go install "$GO_MODULE@$GO_VERSION" >&2 \
    || die "go install $GO_MODULE@$GO_VERSION failed"
  echo "$GO_VERSION" >"$SERVER_BIN.version"
  exec 9>&-
  log "built in $((SECONDS - started))s"
}

show_log() {
  [[ -s "$LOG_FILE" ]] && { log "--- tail of $LOG_FILE"; tail -n 40 "$LOG_FILE" >&2; }
  return 0
}

new_data_dir() {
  # A fresh data folder (the previous one removed), recorded for `stop`; prints its path.
  mkdir -p "$STATE_DIR"
  cleanup_data
  local data
  data=$(mktemp -d "${TMPDIR:-/tmp}/$DATA_PREFIX.XXXXXX")
  echo "$data" >"$DATA_FILE"
  echo "$data"
}

launch() {
  # Run "$@" in its own session and process group, so the test runner's signals do not
  # reach it and `stop` can end it (and only it) by pid; wait until `ready`. A start that
  # fails is tried once more, after its process is gone: on a loaded machine a first start
  # has been seen to stay silent (an empty log) and never answer.
  local timeout_s=$1
  shift
  local attempt
  for attempt in 1 2; do
    launch_once "$timeout_s" "$@" && return 0
    (( attempt == 1 )) && log "start failed; trying once more"
  done
  die "$SERVER_NAME did not become ready at $URL within ${timeout_s}s (two attempts)"
}

launch_once() {
  local timeout_s=$1
  shift
  rm -f "$PID_FILE"
  setsid "$@" >"$LOG_FILE" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$PID_FILE"
  local deadline=$((SECONDS + timeout_s))
  until ready; do
    # Alive is checked on the pid itself, not on running_pid's binary check: until the
    # forked shell has exec'd the server, /proc/$pid/exe is still bash or setsid.
    if (( SECONDS >= deadline )) || ! kill -0 "$pid" 2>/dev/null; then
      log "no answer at $URL after $((timeout_s - deadline + SECONDS))s; process $pid: $(
        ps -o stat=,etime=,args= -p "$pid" 2>/dev/null || echo gone)"
      show_log
      kill_launched "$pid"
      return 1
    fi
    sleep 0.3
  done
  log "up (pid $pid) at $URL"
}

kill_launched() {
  # End a server this script launched that never became ready (its whole process group).
  local pid=$1 waited=0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && (( waited < 50 )); do
    sleep 0.2
    waited=$((waited + 1))
  done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
}

cleanup_data() {
  # Remove the data folder of a previous server (only one this script created).
  if [[ -s "$DATA_FILE" ]]; then
    local data
    data=$(<"$DATA_FILE")
    [[ "$data" == */"$DATA_PREFIX".* && -d "$data" ]] && rm -rf "$data"
    rm -f "$DATA_FILE"
  fi
  return 0
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    log "not running"
    rm -f "$PID_FILE"
    cleanup_data
    return 0
  fi
  kill -TERM "$pid"
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if (( SECONDS >= deadline )); then
      log "pid $pid ignored SIGTERM for 30s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.2
  done
  rm -f "$PID_FILE"
  cleanup_data
  log "stopped (pid $pid)"
}

status() {
  local pid
  if ! pid=$(running_pid); then
    echo "not running"
    return 3
  fi
  if ready; then
    echo "running (pid $pid) at $URL"
  else
    echo "running (pid $pid) at $URL but not ready yet"
    return 1
  fi
}

main() {
  case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    build) build ;;
    *) echo "usage: $0 start|stop|status|build" >&2; exit 2 ;;
  esac
}
