#!/usr/bin/env bash
# The folder `yolo11-triton check image-build` stands in for the release's DALI backend with, made the way the
# backend's build makes it (python_models/export/deployment.py, DALI_BACKEND_PIP_INSTALL: ~270 MB downloaded, ~790 MB
# in .venv/image-rehearsal), and the few wheels the rehearsal's pip may install: tools/bootstrap.sh runs this, so the
# tests download nothing. Re-running is cheap: nothing is redone while the recorded command and Python are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-.venv/bin/python}" -m python_models check image-build --prepare
