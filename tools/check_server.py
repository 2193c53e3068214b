"""`yolo11-triton check server` by path (python_models/cli/check_server.py), for what calls this script: docker compose,
the Kubernetes manifests or the image build. Run from a checkout or the image's WORKDIR."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from python_models.cli import run  # noqa: E402

sys.exit(run("check_server", "tools/check_server.py", sys.argv[1:]))
