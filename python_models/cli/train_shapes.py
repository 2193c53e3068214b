"""Train the test detector: a YOLO11 on synthetic shapes (python_models/export/shapes_dataset.py), with Ultralytics'
own trainer, on the CPU, deterministically.

    yolo11-triton dev train-shapes [--out tests/assets/shapes_yolo11.pt] [--epochs 30] [--train 500] [--val 60]

Generates the training and validation sets from fixed seeds, trains the network defined by
``--model`` (a narrow YOLO11, see SHAPES_MODEL), and writes the best epoch's weights to --out,
with the class names circle, square, triangle. The committed weights came from this command
with its defaults; it prints the validation mAP Ultralytics measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

from python_models.cli.paths import ROOT  # noqa: E402

from python_models.export import shapes_dataset as shapes  # noqa: E402

DEFAULT_OUT = ROOT / "tests" / "assets" / "shapes_yolo11.pt"
SHAPES_SCALE = [0.33, 0.125, 256]
"""Depth, width and channel cap of the network: YOLO11's head and blocks at an eighth of the width of yolo11n's
first layers (a few hundred thousand parameters), enough for three kinds of shapes and fast to train on two cores."""


def network_yaml(folder: Path) -> Path:
    """yolo11.yaml with the shapes' classes, their names and the narrow scale."""
    import ultralytics
    import yaml

    definition = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg" / "models" / "11" / "yolo11.yaml").read_text())
    definition.update(nc=len(shapes.NAMES), names=list(shapes.NAMES), scales={"t": SHAPES_SCALE})
    path = folder / "yolo11t-shapes.yaml"
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--train", type=int, default=500, help="training images")
    parser.add_argument("--val", type=int, default=60, help="validation images (the held-out test set is separate)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--work-dir", type=Path, help="keep the dataset and Ultralytics' run here (default: a temp dir)")
    args = parser.parse_args(argv)

    import torch
    from ultralytics import YOLO

    torch.set_num_threads(os.cpu_count() or 1)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="shapes_"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    data = shapes.write_dataset(work / "data", args.train, args.val)
    print(f"dataset: {args.train} training, {args.val} validation images in {work / 'data'}", flush=True)
    model = YOLO(str(network_yaml(work)))
    model.train(data=str(data), epochs=args.epochs, imgsz=shapes.IMAGE_SIZE, batch=args.batch, device="cpu",
                workers=0, seed=0, deterministic=True, amp=False, plots=False, project=str(work / "runs"),
                name="train", exist_ok=True, verbose=False, patience=args.epochs, cache=True)
    best = work / "runs" / "train" / "weights" / "best.pt"
    metrics = YOLO(str(best)).val(data=str(data), imgsz=shapes.IMAGE_SIZE, batch=args.batch, device="cpu",
                                  plots=False, verbose=False, project=str(work / "runs"), name="val", exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) after {time.time() - start:.0f} s; validation "
          f"mAP50-95 {metrics.box.map:.3f}, mAP50 {metrics.box.map50:.3f}", flush=True)
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
