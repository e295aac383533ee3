#!/usr/bin/env bash
# Supply chain: `cargo deny check` with deny.toml. Licenses, bans and sources gate. Advisories
# gate too whenever RustSec's database (a git repository on github.com) can be fetched; where it
# cannot (this CI machine reaches only the crates, Debian and PyPI registries) the script says
# so plainly instead of passing in silence.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo deny --version
cargo deny check --hide-inclusion-graph bans licenses sources
set +e
out=$(cargo deny check advisories 2>&1)
status=$?
set -e
if [ "$status" -eq 0 ]; then
  echo "cargo deny advisories: ok"
elif grep -q "failed to fetch advisory database" <<<"$out"; then
  echo "cargo deny advisories: NOT CHECKED: RustSec's advisory database (github.com) cannot be fetched from this machine"
else
  echo "$out"
  exit "$status"
fi
