"""Rehearse the serving image's build here, off the GPU host, and fail with the reason where the real build would.

    yolo11-triton check image-build [--compose docker-compose.yml] [--prepare] [--work DIR]

Runs docker-compose.yml's own Dockerfile steps (read from its dockerfile_inline, not restated) in a fake root standing
for /, set up as the pinned release sets up its Python: its ENV (python_models/export/deployment.py, RELEASE_ENV) and
its DALI backend's folder, made by the command the backend's build runs (numpy 2 included), first on PYTHONPATH. Then
the Dockerfile's ENV, WORKDIR, COPY (from this checkout) and RUN steps in order: the venv, pip install ".[image]",
and the image check (with --python-only: the release's own files cannot exist here). apt-get steps are skipped and
named. The venv starts from this checkout's environment (a .pth file behind its own site-packages), so pip installs
only what is missing or shadowed, offline, from wheels fetched once. Exit 1 naming the failing step and the check's
problems; the output ends with what it could not cover.

--prepare makes the DALI-backend folder and fetches those wheels into .venv/image-rehearsal (downloads; what
tools/install_image_rehearsal.sh runs, once) and exits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from python_models.cli.paths import ROOT
from python_models.export import image_build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compose", type=Path, default=ROOT / "docker-compose.yml",
                        help="the compose file whose image build to rehearse")
    parser.add_argument("--prepare", action="store_true",
                        help="make the DALI-backend folder and fetch the wheels (downloads), then exit")
    parser.add_argument("--work", type=Path, help="rehearse in this empty folder and keep it (default: a temporary "
                                                  "one, removed)")
    args = parser.parse_args(argv)
    prepared = image_build.Prepared(ROOT / image_build.PREPARED)
    if args.prepare:
        image_build.prepare(prepared)
        return 0
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    result = image_build.rehearse(image_build.compose_dockerfile(args.compose), ROOT, prepared, args.work)
    for line in result.lines:
        print(line, flush=True)
    if not result.ok:
        print(f"check image-build: FAILED: {result.reason}", file=sys.stderr)
        return 1
    print(f"check image-build: OK: {args.compose}'s image build passes its check here")
    return 0
