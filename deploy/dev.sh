#!/usr/bin/env bash
# README command 1: a working local Capstan on a fresh Debian machine. Installs what is missing
# (etcd, protoc, HAProxy), builds, starts `capstan dev` (etcd, the API, the controllers, three
# process-runtime agents in zones dev-a/b/c, HAProxy), and loads the example web service from
# examples/ behind a listener on 127.0.0.1:8000. Ctrl-C stops everything.
#
# State is kept in .capstan-dev/ between runs (CAPSTAN_DEV_DIR to move it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked --bins
bin=./target/release
data="${CAPSTAN_DEV_DIR:-.capstan-dev}"
mkdir -p "$data"
export CAPSTAN_ENDPOINT="${CAPSTAN_ENDPOINT:-http://127.0.0.1:7400}"
"$bin/capstan" dev --data-dir "$data" --api-listen "${CAPSTAN_ENDPOINT#http://}" &
dev=$!
trap 'kill -INT $dev 2>/dev/null; wait $dev' INT TERM
for _ in $(seq 300); do
  "$bin/capstan" cluster describe >/dev/null 2>&1 && break
  kill -0 $dev 2>/dev/null || exit 1
  sleep 0.2
done

# The example: task definition web:1, target group web-blue, listener web on :8000, service web.
if ! "$bin/capstan" service describe web >/dev/null 2>&1; then
  "$bin/capstan" taskdef register -f examples/web-taskdef.json
  "$bin/capstan" targetgroup create web-blue -f examples/web-targetgroup.json
  "$bin/capstan" listener create web -f examples/web-listener.json
  "$bin/capstan" service create -f examples/web-service.json
fi
cat <<MSG

The example service "web" is rolling out behind http://127.0.0.1:8000/ :
  curl -s http://127.0.0.1:8000/
  $bin/capstan service describe web
  $bin/capstan targetgroup health web-blue

Roll a new revision and follow it live (exits non-zero if the circuit breaker fails it):
  $bin/capstan taskdef register -f examples/web-taskdef-v2.json
  $bin/capstan deploy web --task-definition web --wait

A revision that crashes on start is rolled back by the circuit breaker:
  $bin/capstan taskdef register -f examples/web-taskdef-broken.json
  $bin/capstan deploy web --task-definition web --wait; echo "exit \$?"

Ctrl-C stops everything.
MSG
wait $dev
