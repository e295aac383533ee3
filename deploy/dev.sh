#!/usr/bin/env bash
# Starts a local Capstan on this machine: installs what is missing (Debian), builds, and runs a
# single etcd member on 127.0.0.1:2379 with its data in .capstan-dev/, two process-runtime agents,
# the scheduler, the deployer and the registrar. Ctrl-C stops everything.
#
# The scaler and the API join this script as their issues land (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked
data="${CAPSTAN_DEV_DIR:-.capstan-dev}"
mkdir -p "$data"
etcd --name capstan-dev --data-dir "$data/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster capstan-dev=http://127.0.0.1:2380 >"$data/etcd.log" 2>&1 &
etcd_pid=$!
pids=($etcd_pid)
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; echo "stopped"' EXIT INT TERM
for _ in $(seq 100); do
  etcdctl --endpoints=http://127.0.0.1:2379 endpoint health >/dev/null 2>&1 && break
  sleep 0.1
done
etcdctl --endpoints=http://127.0.0.1:2379 put /capstan/clusters/default '{"clusterName":"default"}' >/dev/null
agents=""
for zone in a b; do
  ./target/release/capstan-agent --runtime process --state-dir "$data/agent-$zone" \
    --attribute "ecs.availability-zone=zone-$zone" --lease-ttl 5 \
    >"$data/agent-$zone.out" 2>"$data/agent-$zone.log" &
  pids+=($!)
done
for zone in a b; do
  for _ in $(seq 100); do grep -q '^capstan-agent ' "$data/agent-$zone.out" 2>/dev/null && break; sleep 0.1; done
  agents="$agents
    zone-$zone: $(head -1 "$data/agent-$zone.out")"
done
for c in scheduler deployer registrar; do
  ./target/release/capstan-$c --election-ttl 5 >"$data/$c.log" 2>&1 &
  pids+=($!)
done
cat <<MSG
Capstan dev: etcd on http://127.0.0.1:2379 (data in $data, log in $data/etcd.log)
  agents (process runtime):$agents
  scheduler, deployer, registrar: logs in $data/scheduler.log, $data/deployer.log, $data/registrar.log

  Run a service (the deployer rolls it out, the scheduler places its tasks):
    etcdctl put /capstan/taskdefinitions/hello/1 '{"family":"hello","containerDefinitions":[{"name":"app","image":"none","memory":32,"entryPoint":["sh","-c"],"command":["exec sleep 3600"]}]}'
    etcdctl put /capstan/services/default/hello '{"serviceName":"hello","taskDefinition":"hello:1","desiredCount":2}'
    etcdctl get --print-value-only /capstan/status/services/default/hello | jq '{runningCount, deployments: [.deployments[] | {id, status, rolloutState}]}'

  Registered container instances:
    etcdctl get --prefix --print-value-only /capstan/containerinstances/default/ | jq -c '{containerInstanceArn, agentEndpoint, status}'

  Register a task definition and watch tasks (docs/etcd-layout.md has every key):
    etcdctl put /capstan/taskdefinitions/web/1 "\$(cat crates/core/tests/fixtures/sample-fargate.json)"
    etcdctl watch --prefix /capstan/

  Measure this machine's etcd baseline:
    ./target/release/capstan-bench etcd-put --endpoints http://127.0.0.1:2379

The scaler, the HAProxy data plane and the API arrive issue by issue; see README.md.
Ctrl-C stops.
MSG
wait $etcd_pid
