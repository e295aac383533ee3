#!/usr/bin/env bash
# The test command: formatting, lints, and every test. Tests start (and stop) the real etcd
# members they need from Debian's etcd-server; install it first with scripts/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# A one-shot run gains nothing from incremental caches, and they are most of a debug tree's size.
[ "${CI:-}" = "true" ] && export CARGO_INCREMENTAL=0
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo deny (deny.toml)"
bash scripts/deny.sh
echo "== cargo build --bins (the end-to-end tests run the real binaries)"
cargo build --workspace --bins --locked
echo "== release binaries and images (the compose test runs the deployment as users do)"
cargo build --release --workspace --bins --locked
if command -v docker >/dev/null 2>&1; then
  CAPSTAN_SKIP_CARGO=1 bash deploy/images/build.sh
fi
echo "== cargo test"
mkdir -p target
log=target/test-output.txt
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary, so the totals are not buried among per-crate lines.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i; if ($(i+1) ~ /^ignored;/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log" | tee target/test-summary.txt
exit "$status"
