"""Export weights into the repository: model.pt (Track A), raw ONNX (Track B), End2End ONNX (Tracks C, D);
then, where TensorRT is importable, one plan per TensorRT model (FP16 unless --fp32).

    .venv/bin/python tools/export.py --weights yolo11s.pt [--artifacts model_repository] [--force] [--fp32]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from python_models.detector import DEFAULT_WEIGHTS  # noqa: E402
from python_models.engine_build import build_repository_engines  # noqa: E402
from python_models.export import export_artifacts  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    parser.add_argument("--artifacts", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--force", action="store_true", help="re-export and rebuild even if up to date")
    parser.add_argument("--fp32", action="store_true", help="build FP32 engines instead of FP16")
    args = parser.parse_args()
    manifest = export_artifacts(args.weights, args.artifacts.resolve(), force=args.force)
    print(f"exported {manifest.weights}{' (UNTRAINED network)' if manifest.untrained else ''} into {args.artifacts}")
    for line in build_repository_engines(args.artifacts.resolve(), force=args.force, fp16=not args.fp32):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
