#!/usr/bin/env bash
# Run a throwaway single-node Elasticsearch on 127.0.0.1 for tests and CI (no Docker).
#
#   scripts/elasticsearch.sh start    fetch (Maven Central), configure, start, wait for health
#   scripts/elasticsearch.sh stop     stop the node started here (by pid) and wait for it
#   scripts/elasticsearch.sh status   exit 0 when the node answers, 3 when it is not running
#
# The server is Elastic's minimal "integ-test-zip" distribution (server, netty transport,
# x-pack core/security; no bundled JDK, no analysis-common). Maven Central serves it only
# up to 8.19.x (no 9.x build is published there), so Carnet pins the 8.x Python client:
# the client's major version matches the server's.
#
# Environment: CARNET_CACHE (download/unpack/run folder, outside the repo),
# CARNET_ES_VERSION, CARNET_ES_PORT (9200), CARNET_ES_HEAP (512m), CARNET_ES_USER
# (unprivileged account used when run as root: Elasticsearch refuses to run as root).
set -euo pipefail

ES_VERSION="${CARNET_ES_VERSION:-8.19.21}"
ES_PORT="${CARNET_ES_PORT:-9200}"
ES_HEAP="${CARNET_ES_HEAP:-512m}"
ES_USER="${CARNET_ES_USER:-carnet-es}"
START_TIMEOUT_S="${CARNET_ES_TIMEOUT:-120}"
ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:${ES_VERSION}:zip"

if [[ $(id -u) -eq 0 ]]; then
  # root's home is private: the unprivileged ES account could not read a cache there.
  CACHE="${CARNET_CACHE:-/var/cache/carnet}"
else
  CACHE="${CARNET_CACHE:-$HOME/.cache/carnet}"
fi
ES_HOME="$CACHE/elasticsearch-$ES_VERSION"
NODE_DIR="$CACHE/es-node-$ES_PORT"  # config, data, logs and pid of this node
PID_FILE="$NODE_DIR/elasticsearch.pid"
URL="http://127.0.0.1:$ES_PORT"

log() { printf 'elasticsearch.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

running_pid() {
  # The pid from the pid file, if that process is alive and is a java process.
  [[ -s "$PID_FILE" ]] || return 1
  local pid
  pid=$(<"$PID_FILE")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  grep -q java "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

show_logs() {
  local f
  for f in "$NODE_DIR/logs/launcher.out" "$NODE_DIR/logs/carnet-test.log"; do
    [[ -s "$f" ]] && { log "--- tail of $f"; tail -n 60 "$f" >&2; }
  done
  return 0
}

health() {
  curl -fsS --max-time 5 "$URL/_cluster/health?wait_for_status=yellow&timeout=1s" 2>/dev/null
}

find_java() {
  # Newest JDK >= 17 (ES 8.19 needs 17; prefer 21+) under /usr/lib/jvm, or ES_JAVA_HOME.
  if [[ -n "${ES_JAVA_HOME:-}" && -x "$ES_JAVA_HOME/bin/java" ]]; then
    echo "$ES_JAVA_HOME"
    return 0
  fi
  local best="" best_major=0 dir major
  for dir in /usr/lib/jvm/*/; do
    dir="${dir%/}"
    [[ -x "$dir/bin/java" && -f "$dir/release" && ! -L "$dir" ]] || continue
    major=$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$dir/release")
    [[ -n "$major" ]] || continue
    if (( major > best_major )); then
      best="$dir"
      best_major=$major
    fi
  done
  (( best_major >= 17 )) || return 1
  echo "$best"
}

ensure_tools() {
  local missing=() tool
  for tool in mvn unzip curl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  (( ${#missing[@]} == 0 )) && return 0
  [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}: install maven, unzip and curl"
  log "installing maven unzip curl (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven unzip curl >/dev/null
}

fetch() {
  [[ -x "$ES_HOME/bin/elasticsearch" ]] && return 0
  local downloads="$CACHE/downloads"
  mkdir -p "$downloads"
  log "fetching $ARTIFACT from Maven Central"
  if ! mvn -q -B dependency:copy -Dartifact="$ARTIFACT" -DoutputDirectory="$downloads" \
    >"$downloads/mvn.log" 2>&1; then
    tail -n 40 "$downloads/mvn.log" >&2
    die "could not fetch $ARTIFACT"
  fi
  local tmp="$CACHE/.unpack.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  unzip -q "$downloads/elasticsearch-$ES_VERSION.zip" -d "$tmp"
  mv "$tmp/elasticsearch-$ES_VERSION" "$ES_HOME"
  rm -rf "$tmp"
}

configure() {
  # A throwaway node: data written by another version is wiped, not migrated.
  if [[ -d "$NODE_DIR/data" && "$(cat "$NODE_DIR/version" 2>/dev/null)" != "$ES_VERSION" ]]; then
    rm -rf "$NODE_DIR/data"
  fi
  mkdir -p "$NODE_DIR/data" "$NODE_DIR/logs" "$NODE_DIR/tmp"
  echo "$ES_VERSION" >"$NODE_DIR/version"
  rm -rf "$NODE_DIR/config"
  cp -r "$ES_HOME/config" "$NODE_DIR/config"
  cat >"$NODE_DIR/config/elasticsearch.yml" <<EOF
cluster.name: carnet-test
node.name: carnet-es-$ES_PORT
path.data: $NODE_DIR/data
path.logs: $NODE_DIR/logs
# Loopback only: ES then runs in development mode (no production bootstrap checks,
# so vm.max_map_count does not matter).
network.host: 127.0.0.1
http.port: $ES_PORT
transport.port: $((ES_PORT + 100))
discovery.type: single-node
xpack.security.enabled: false
# A nearly full disk must not turn the test indices read-only.
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
EOF
  cat >"$NODE_DIR/config/jvm.options.d/carnet.options" <<EOF
-Xms$ES_HEAP
-Xmx$ES_HEAP
EOF
}

as_es_user() {
  # Elasticsearch refuses to run as root: use an unprivileged system account then.
  if [[ $(id -u) -ne 0 ]]; then
    "$@"
    return
  fi
  if ! id -u "$ES_USER" >/dev/null 2>&1; then
    log "creating system user $ES_USER"
    useradd -r -M -d "$CACHE" -s /usr/sbin/nologin "$ES_USER"
  fi
  chown -R "$ES_USER:" "$ES_HOME" "$NODE_DIR"
  # Every parent of the cache must be traversable by that account.
  runuser -u "$ES_USER" -- test -r "$ES_HOME/bin/elasticsearch" \
    || die "$ES_USER cannot read $ES_HOME: set CARNET_CACHE to a world-traversable folder"
  runuser -u "$ES_USER" -- "$@"
}

start() {
  if pid=$(running_pid); then
    log "already running (pid $pid) at $URL"
    return 0
  fi
  if curl -fsS --max-time 2 "$URL" >/dev/null 2>&1; then
    die "something else already answers at $URL (not started by this script)"
  fi
  ensure_tools
  local java_home
  java_home=$(find_java) || die "no JDK >= 17 found under /usr/lib/jvm (set ES_JAVA_HOME)"
  fetch
  configure
  rm -f "$PID_FILE"
  log "starting Elasticsearch $ES_VERSION with $java_home at $URL"
  as_es_user env ES_JAVA_HOME="$java_home" ES_PATH_CONF="$NODE_DIR/config" \
    ES_TMPDIR="$NODE_DIR/tmp" "$ES_HOME/bin/elasticsearch" -d -p "$PID_FILE" \
    >"$NODE_DIR/logs/launcher.out" 2>&1 || {
      show_logs
      die "Elasticsearch failed to start"
    }
  local deadline=$((SECONDS + START_TIMEOUT_S))
  until health >/dev/null; do
    if (( SECONDS >= deadline )) || ! running_pid >/dev/null; then
      show_logs
      die "Elasticsearch did not become healthy at $URL within ${START_TIMEOUT_S}s"
    fi
    sleep 1
  done
  log "up (pid $(running_pid)): $(health)"
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    log "not running"
    rm -f "$PID_FILE"
    return 0
  fi
  kill -TERM "$pid"
  local deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null; do
    if (( SECONDS >= deadline )); then
      log "pid $pid ignored SIGTERM for 60s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.5
  done
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}

status() {
  local pid
  if ! pid=$(running_pid); then
    echo "not running"
    return 3
  fi
  if body=$(health); then
    echo "running (pid $pid) at $URL: $body"
  else
    echo "running (pid $pid) at $URL but not healthy yet"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
