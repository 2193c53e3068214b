"""Export weights into the repository, then build the TensorRT plans the served profile needs.

    yolo11-triton export --weights yolo11s.pt [--imgsz 640] [--conf 0.25] [--iou 0.45] [--max-det 100]
                            [--weights-dir weights] [--profile auto|cpu|gpu] [--precision fp16|fp32]
                            [--models yolo11_trt,...] [--artifacts artifacts] [--force]

Writes model.pt (Track A), the raw and End2End ONNX in FP32 and FP16 (Tracks B, C, D) and every model
config, all for the exported model: its classes and names, the image size, the thresholds. In the GPU
profile it then builds one plan per TensorRT model with this image's trtexec and checks each plan
against this image's libnvinfer. It fails, with the reason and a non-zero exit, when the weights
cannot be resolved (unless --allow-untrained) or cannot be served (segmentation, pose, NMS-free
heads: the message says what can), when the repository is not writable (before any work), and when
a plan the GPU profile needs was not built. A refused export leaves the repository as it was. Its last
step, only when everything was built, writes export_complete.json (what a Kubernetes serving pod waits for).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # Ultralytics must never pip-install at run time

from python_models.cli.paths import ROOT  # noqa: E402

from python_models.export import repository as repo  # noqa: E402
from python_models.export.weights import DEFAULT_WEIGHTS, UnservableModel, WeightsError  # noqa: E402
from python_models.export.engine_build import PRECISIONS, build_for_gpu_profile  # noqa: E402
from python_models.export.artifacts import ARTIFACTS_DIR, EXPORT_COMPLETE, ExportOptions, RepositoryNotWritable  # noqa: E402
from python_models.export.artifacts import export_artifacts  # noqa: E402
from python_models.export.artifacts import untrained_banner  # noqa: E402
from python_models.serving.triton import ngc_image  # noqa: E402

EXIT_WEIGHTS, EXIT_NOT_WRITABLE, EXIT_PLANS = 2, 3, 4


def public_models(value: str | None) -> list[str]:
    models = value.split(",") if value else list(repo.PUBLIC_MODELS)
    unknown = [m for m in models if m not in repo.PUBLIC_MODELS]
    if unknown:
        raise argparse.ArgumentTypeError(f"not public models: {', '.join(unknown)} (choose from {', '.join(repo.PUBLIC_MODELS)})")
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS,
                        help="a .pt file, a name Ultralytics publishes (downloaded into --weights-dir), or a .yaml "
                             "for the deterministic untrained test network")
    parser.add_argument("--weights-dir", type=Path, default=ROOT / "weights", help="where weights names are looked "
                        "up and downloaded")
    parser.add_argument("--allow-untrained", action="store_true",
                        help="serve the untrained test network when the weights cannot be resolved, instead of failing")
    parser.add_argument("--artifacts", type=Path, default=ROOT / ARTIFACTS_DIR,
                        help="the repository the export writes (default: artifacts/ of the checkout, ignored by git)")
    parser.add_argument("--profile", choices=("auto", "cpu", "gpu"), default="auto",
                        help="gpu: the plans are required; auto: gpu inside the NGC image, else cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16", help="of the TensorRT plans")
    parser.add_argument("--models", type=public_models, default=list(repo.PUBLIC_MODELS),
                        help="comma-separated public models whose plans are required (default: all)")
    parser.add_argument("--force", action="store_true", help="re-export and rebuild even if up to date")
    ExportOptions.add_arguments(parser)
    args = parser.parse_args(argv)
    profile = ("gpu" if ngc_image() else "cpu") if args.profile == "auto" else args.profile
    artifacts = args.artifacts.resolve()

    try:
        manifest = export_artifacts(args.weights, artifacts, force=args.force, weights_dir=args.weights_dir.resolve(),
                                    allow_untrained=args.allow_untrained, options=ExportOptions.from_args(args))
    except RepositoryNotWritable as exc:
        print(f"export: {exc}", file=sys.stderr)
        return EXIT_NOT_WRITABLE
    except WeightsError as exc:
        hint = "" if isinstance(exc, UnservableModel) else (". Pass --allow-untrained to serve the untrained test "
                                                              "network instead.")
        print(f"export: weights {args.weights!r} cannot be used: {exc}{hint}", file=sys.stderr)
        return EXIT_WEIGHTS
    complete = artifacts / EXPORT_COMPLETE
    complete.unlink(missing_ok=True)  # the plans below are rebuilt or checked: not complete until they are
    if manifest.untrained:
        print(untrained_banner(manifest), flush=True)
    spec = manifest.spec
    print(f"exported {manifest.weights} ({manifest.source}) into {artifacts}: {spec.num_classes} classes "
          f"({', '.join(spec.names[:5])}{', ...' if spec.num_classes > 5 else ''}) at {spec.imgsz}x{spec.imgsz}, "
          f"conf {spec.conf}, iou {spec.iou}, max_det {spec.max_det}", flush=True)

    if profile == "cpu":
        print("CPU profile: no TensorRT plans needed (the twins run the exported ONNX), and no compiled network "
              "(Track A runs the network eagerly there)", flush=True)
        write_complete(complete, manifest.weights, profile, args.models)
        return 0
    failed = build_for_gpu_profile(artifacts, spec, args.models, precision=args.precision, force=args.force,
                                   log=lambda line: print(line, flush=True), tracking=manifest.tracking_options)
    for line in failed:
        print(f"export: NOT BUILT {line}", file=sys.stderr)
    if failed:
        print(f"export: {len(failed)} plan(s) or package(s) the GPU profile needs were not built; the server would "
              "not serve the tracks that run them.", file=sys.stderr)
        return EXIT_PLANS
    write_complete(complete, manifest.weights, profile, args.models)
    return 0


def write_complete(path: Path, weights: str, profile: str, models: list[str]) -> None:
    path.write_text(json.dumps({"weights": weights, "profile": profile, "models": models,
                                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
