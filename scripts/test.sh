#!/usr/bin/env bash
# The test command: formatting, lints, and every test. Tests start (and stop) the real etcd
# members they need from Debian's etcd-server; install it first with scripts/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
