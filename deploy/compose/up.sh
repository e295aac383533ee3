#!/usr/bin/env bash
# Brings up Capstan's HA topology (docker-compose.yml) on this Docker engine with mutual TLS,
# and loads the example web service (3 tasks behind listener :8000 on both LB hosts).
#
#   COMPOSE_PROJECT_NAME  the compose project (default capstan)
#   CAPSTAN_NET           the first three octets of the project's /24 (default 10.213.0); a
#                         second deployment on one engine needs another
#   CAPSTAN_SKIP_CARGO=1  use the release binaries as built (images/build.sh)
#
# The operator's identity for the CLI on this machine lands in deploy/compose/.operator/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-capstan}"
export CAPSTAN_NET="${CAPSTAN_NET:-10.213.0}"
bash ../images/build.sh
docker-compose run --rm certs >/dev/null
docker-compose up -d --remove-orphans
op="$here/.operator"
mkdir -p "$op"
for f in ca.pem operator.pem operator.key; do
  docker run --rm -v "${COMPOSE_PROJECT_NAME}_pki:/pki:ro" capstan:dev cat "/pki/$f" >"$op/$f"
done
chmod 600 "$op/operator.key"
capstan() {
  "$here/../../target/release/capstan" --endpoint https://$CAPSTAN_NET.21:7400 \
    --tls-ca "$op/ca.pem" --tls-cert "$op/operator.pem" --tls-key "$op/operator.key" "$@"
}
for _ in $(seq 300); do
  capstan cluster describe >/dev/null 2>&1 && break
  sleep 0.2
done
capstan cluster describe >/dev/null
# The example spreads over the agent hosts: wait until all three have registered (a service
# placed on fewer hosts stays there; tasks are not moved once they run).
for _ in $(seq 300); do
  [ "$(capstan -o json instance list 2>/dev/null | grep -o '"containerInstanceArn"' | wc -l)" -ge 3 ] && break
  sleep 0.2
done
if ! capstan service describe web >/dev/null 2>&1; then
  capstan taskdef register -f "$here/web-taskdef.json" >/dev/null
  capstan targetgroup create web-blue -f "$here/../../examples/web-targetgroup.json" >/dev/null
  capstan listener create web -f "$here/../../examples/web-listener.json" >/dev/null
  capstan service create -f "$here/../../examples/web-service.json" >/dev/null
fi
cat <<MSG
Capstan is up (project $COMPOSE_PROJECT_NAME). The example service "web" serves on both LB hosts:
  curl -s http://$CAPSTAN_NET.41:8000/ ; curl -s http://$CAPSTAN_NET.42:8000/
The CLI, with the operator's certificate:
  target/release/capstan --endpoint https://$CAPSTAN_NET.21:7400 --tls-ca $op/ca.pem \\
    --tls-cert $op/operator.pem --tls-key $op/operator.key service describe web
Tear it down: deploy/compose/down.sh
MSG
