#!/usr/bin/env bash
# Stops and removes the compose topology: containers, network and volumes (etcd data, agents'
# state, certificates).
set -euo pipefail
cd "$(dirname "$0")"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-capstan}"
docker-compose down --volumes --remove-orphans --timeout 5
rm -rf .operator
