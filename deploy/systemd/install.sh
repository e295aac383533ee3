#!/usr/bin/env bash
# Installs Capstan for one machine role, as systemd services:
#
#   deploy/systemd/install.sh ROLE PKI_DIR CERT_NAME [--no-start]
#
#   ROLE       control-plane (api, scheduler, deployer, scaler) | lb (registrar + HAProxy) | agent
#   PKI_DIR    a directory with ca.pem, CERT_NAME.pem and CERT_NAME.key (`capstan certs issue`),
#              and for control-plane and agent machines encryption.key (`capstan certs
#              encryption-key`, made once for the whole cluster)
#   CERT_NAME  this machine's certificate (it must name the hosts peers reach it by)
#
# Binaries come from target/release (build with `cargo build --release --bins`). Every component
# but the agent runs as its own user; each gets its own copy of the key, readable by it only.
# Existing /etc/capstan/*.env files are kept: edit them (etcd endpoints, addresses), then
# `systemctl restart capstan-<component>`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
role="${1:?role: control-plane, lb or agent}"
pki="${2:?PKI directory}"
name="${3:?certificate name}"
start=true
[ "${4:-}" = "--no-start" ] && start=false
case "$role" in
  control-plane) components=(api scheduler deployer scaler) ;;
  lb) components=(registrar) ;;
  agent) components=(agent) ;;
  *) echo "unknown role $role: control-plane, lb or agent" >&2; exit 2 ;;
esac
for f in ca.pem "$name.pem" "$name.key"; do
  [ -r "$pki/$f" ] || { echo "$pki/$f is missing (capstan certs issue --dir $pki $name --host …)" >&2; exit 1; }
done
# The API seals secrets with the cluster's one encryption key and agents open them: the same
# file on every control-plane and agent machine.
sealing=false
case "$role" in control-plane|agent) sealing=true ;; esac
if $sealing && [ ! -r "$pki/encryption.key" ]; then
  echo "$pki/encryption.key is missing (capstan certs encryption-key --dir $pki, once for the cluster)" >&2
  exit 1
fi
[ "$role" = lb ] && { command -v haproxy >/dev/null || apt-get install -y -qq haproxy >/dev/null; }
root="${DESTDIR:-}"
install -d -m 0755 "$root/etc/capstan" "$root/etc/capstan/pki" "$root/usr/local/bin" \
  "$root/etc/systemd/system" "$root/usr/share/doc/capstan"
install -m 0644 "$pki/ca.pem" "$root/etc/capstan/pki/ca.pem"
if $sealing; then install -m 0600 "$pki/encryption.key" "$root/etc/capstan/encryption.key"; fi
install -m 0644 "$here/../../docs/operations.md" "$root/usr/share/doc/capstan/operations.md"
for c in "${components[@]}"; do
  user=root
  if [ "$c" != agent ]; then
    user="capstan-$c"
    id -u "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
  fi
  install -m 0755 "$here/../../target/release/capstan-$c" "$root/usr/local/bin/capstan-$c"
  install -m 0644 "$here/capstan-$c.service" "$root/etc/systemd/system/capstan-$c.service"
  install -m 0644 -o "$user" "$pki/$name.pem" "$root/etc/capstan/pki/$c.pem"
  install -m 0600 -o "$user" "$pki/$name.key" "$root/etc/capstan/pki/$c.key"
  [ -e "$root/etc/capstan/$c.env" ] || install -m 0640 -g "$user" "$here/env/$c.env" "$root/etc/capstan/$c.env"
done
if $start && [ -z "$root" ]; then
  systemctl daemon-reload
  for c in "${components[@]}"; do systemctl enable --now "capstan-$c"; done
  echo "started: ${components[*]/#/capstan-}; edit /etc/capstan/*.env for this machine"
fi
