"""`yolo11-triton serve` by path (python_models/cli/serve.py), for what calls this script: docker compose,
the Kubernetes manifests or the image build. Run from a checkout or the image's WORKDIR."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from python_models.cli import run  # noqa: E402

sys.exit(run("serve", "tools/serve.py", sys.argv[1:]))
