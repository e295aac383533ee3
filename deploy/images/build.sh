#!/usr/bin/env bash
# Builds Capstan's container images on this machine, with no registry: the engine starts with no
# images and none can be pulled.
#
#   capstan-base:dev  busybox, HAProxy, etcd/etcdctl and the shared libraries they and Capstan's
#                     binaries link, copied from this machine's Debian packages into a rootfs and
#                     `docker import`ed. Built once (again with --base, or when missing).
#   capstan:dev       capstan-base:dev plus the release binaries: after a code change only this
#                     layer, a copy of the binaries, is rebuilt.
#
# Every process in a container runs as user capstan (uid 10001) unless its service says
# otherwise; the image has no shell profile, no package manager and no compiler.
set -euo pipefail
cd "$(dirname "$0")/../.."
bins=(capstan capstan-api capstan-agent capstan-scheduler capstan-deployer capstan-scaler
  capstan-registrar capstan-nodegroup-local)
rebuild_base=false
[ "${1:-}" = "--base" ] && rebuild_base=true
bash scripts/install-deps.sh >/dev/null
[ "${CAPSTAN_SKIP_CARGO:-}" = 1 ] || cargo build --release --locked --bins -q
for b in "${bins[@]}"; do
  [ -x "target/release/$b" ] || { echo "target/release/$b is missing" >&2; exit 1; }
done

if $rebuild_base || ! docker image inspect capstan-base:dev >/dev/null 2>&1; then
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root"/{bin,usr/bin,usr/sbin,usr/local/bin,etc,tmp,run,pki,var/lib/capstan,home/capstan}
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done
  cp /usr/sbin/haproxy "$root/usr/sbin/haproxy"
  cp /usr/bin/etcd /usr/bin/etcdctl "$root/usr/bin/"
  # Every shared library the programs link (and the dynamic loader), at the same paths.
  for exe in /usr/sbin/haproxy /usr/bin/etcd /usr/bin/etcdctl "${bins[@]/#/target/release/}"; do
    ldd "$exe" 2>/dev/null | awk '/=> \// { print $3 } /^[ \t]*\/lib/ { print $1 }'
  done | sort -u | while read -r lib; do
    cp --parents -L "$lib" "$root/"
  done
  cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
capstan:x:10001:10001:capstan:/home/capstan:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
  cat >"$root/etc/group" <<'GROUP'
root:x:0:
capstan:x:10001:
nogroup:x:65534:
GROUP
  echo "hosts: files dns" >"$root/etc/nsswitch.conf"
  # The CA roots webhook and health-check clients verify public endpoints against.
  mkdir -p "$root/etc/ssl/certs"
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  # Volumes mounted here start with this ownership.
  chown -R 10001:10001 "$root/var/lib/capstan" "$root/home/capstan" "$root/pki"
  tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin' - capstan-base:dev >/dev/null
  echo "built capstan-base:dev"
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx" "${root:-}"' EXIT
mkdir -p "$ctx/bin"
for b in "${bins[@]}"; do cp "target/release/$b" "$ctx/bin/"; done
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM capstan-base:dev
COPY bin/ /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/capstan
DOCKERFILE
docker build -q -t capstan:dev "$ctx" >/dev/null 2> >(grep -v -i "legacy builder\|buildx\|docs.docker.com/go/buildx\|^ *$" >&2)
echo "built capstan:dev"
