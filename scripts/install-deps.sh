#!/usr/bin/env bash
# Installs the system packages Capstan builds and tests with (Debian 12): etcd, protoc, HAProxy.
set -euo pipefail
pkgs=(etcd-server etcd-client protobuf-compiler libprotobuf-dev haproxy socat busybox-static)
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
command -v etcd >/dev/null && command -v protoc >/dev/null
