"""A synthetic, labelled detection dataset, and the small detector trained on it with Ultralytics' own trainer.

No trained weights can be had where the tests run, and the untrained test network detects
arbitrary boxes: no accuracy can be measured with it, and parity tests on it are weakly
sensitive. Three classes of filled shapes (circle, square, triangle) of random size, colour
and position on a textured background are easy to learn and give exact ground truth: a
detector trained on them in minutes on two cores has confident detections that move when
pixels move, and its mAP on a held-out set says whether a served track computes what the
Ultralytics predictor computes. Everything is a function of a seed, so anyone can rebuild
the committed weights (``yolo11-triton dev train-shapes``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

NAMES = ("circle", "square", "triangle")
"""Class names, in class-index order."""
IMAGE_SIZE = 320
"""What the detector is trained and served at."""
TRAIN_SEED, VAL_SEED, TEST_SEED = 0, 1, 2
"""Seeds of the training, validation (used while training) and held-out test sets; distinct, so no image repeats."""
JPEG_QUALITY = 90
SIDES = (192, 448)
"""Image width and height are drawn from this range: most images are not square, so letterboxing pads them."""
OBJECT_SIZE = (18, 110)
"""Shape sizes in pixels (circle diameter, square side, triangle width)."""
MAX_OBJECTS = 6


@dataclass(frozen=True)
class Box:
    cls: int
    x1: float
    y1: float
    x2: float
    y2: float


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour gradient, coarse blotches and fine noise: the detector must not key on a flat background."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    corners = rng.uniform(40, 215, (2, 2, 3)).astype(np.float32)
    fx, fy = (x / width)[..., None], (y / height)[..., None]
    image = (corners[0, 0] * (1 - fx) * (1 - fy) + corners[0, 1] * fx * (1 - fy)
             + corners[1, 0] * (1 - fx) * fy + corners[1, 1] * fx * fy)
    blotches = cv2.resize(rng.normal(0, 25, (max(height // 24, 2), max(width // 24, 2), 3)).astype(np.float32),
                          (width, height), interpolation=cv2.INTER_CUBIC)
    image += blotches + rng.normal(0, 8, (height, width, 3)).astype(np.float32)
    for _ in range(rng.integers(0, 4)):  # thin lines: edges that are not shapes
        p1 = tuple(int(v) for v in rng.integers(0, [width, height]))
        p2 = tuple(int(v) for v in rng.integers(0, [width, height]))
        cv2.line(image, p1, p2, tuple(float(v) for v in rng.uniform(0, 255, 3)), int(rng.integers(1, 3)))
    return np.clip(image, 0, 255).astype(np.uint8)


def _overlaps(box: tuple[float, float, float, float], placed: list[Box], limit: float = 0.1) -> bool:
    x1, y1, x2, y2 = box
    for other in placed:
        iw = max(0.0, min(x2, other.x2) - max(x1, other.x1))
        ih = max(0.0, min(y2, other.y2) - max(y1, other.y1))
        inter = iw * ih
        union = (x2 - x1) * (y2 - y1) + (other.x2 - other.x1) * (other.y2 - other.y1) - inter
        if inter / union > limit:
            return True
    return False


def render(seed: int, index: int) -> tuple[np.ndarray, list[Box]]:
    """Image ``index`` of the set ``seed``: a BGR image and its boxes (pixels, inclusive of the drawn outline)."""
    rng = np.random.default_rng([seed, index])
    height, width = (int(v) for v in rng.integers(SIDES[0], SIDES[1] + 1, 2))
    image = _background(rng, height, width)
    boxes: list[Box] = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        cls = int(rng.integers(0, len(NAMES)))
        size = float(rng.uniform(*OBJECT_SIZE))
        cx, cy = rng.uniform(size / 2, width - size / 2), rng.uniform(size / 2, height - size / 2)
        box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
        if _overlaps(box, boxes):
            continue
        # Far from the background's local colour, so every shape is visible.
        local = image[int(cy), int(cx)].astype(int)
        colour = rng.integers(0, 256, 3)
        while np.abs(colour - local).sum() < 150:
            colour = rng.integers(0, 256, 3)
        colour = tuple(int(v) for v in colour)
        if NAMES[cls] == "circle":
            cv2.circle(image, (round(cx), round(cy)), round(size / 2), colour, -1, cv2.LINE_AA)
            r = round(size / 2)
            drawn = (round(cx) - r, round(cy) - r, round(cx) + r + 1, round(cy) + r + 1)
        elif NAMES[cls] == "square":
            x1, y1 = round(box[0]), round(box[1])
            x2, y2 = round(box[2]), round(box[3])
            cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), colour, -1)
            drawn = (x1, y1, x2, y2)
        else:
            points = np.array([[box[0], box[3]], [box[2], box[3]], [cx, box[1]]]).round().astype(np.int32)
            cv2.fillPoly(image, [points], colour, cv2.LINE_AA)
            drawn = (points[:, 0].min(), points[:, 1].min(), points[:, 0].max() + 1, points[:, 1].max() + 1)
        x1, y1, x2, y2 = (float(v) for v in drawn)
        boxes.append(Box(cls, max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))))
    return image, boxes


def encode(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def write_split(root: Path, split: str, seed: int, count: int) -> Path:
    """``root/images/<split>`` and ``root/labels/<split>`` in Ultralytics' YOLO format; returns the images folder."""
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, boxes = render(seed, index)
        height, width = image.shape[:2]
        (images / f"{index:05d}.jpg").write_bytes(encode(image))
        rows = [f"{b.cls} {(b.x1 + b.x2) / 2 / width:.6f} {(b.y1 + b.y2) / 2 / height:.6f} "
                f"{(b.x2 - b.x1) / width:.6f} {(b.y2 - b.y1) / height:.6f}" for b in boxes]
        (labels / f"{index:05d}.txt").write_text("\n".join(rows) + "\n")
    return images


def write_dataset(root: Path, train: int, val: int) -> Path:
    """The training and validation splits and the data YAML Ultralytics' trainer reads; returns the YAML."""
    write_split(root, "train", TRAIN_SEED, train)
    write_split(root, "val", VAL_SEED, val)
    data = root / "shapes.yaml"
    # JSON is valid YAML; no YAML writer needed.
    data.write_text(json.dumps({"path": str(root.resolve()), "train": "images/train", "val": "images/val",
                                "names": dict(enumerate(NAMES))}, indent=2) + "\n")
    return data


def test_set(count: int) -> list[tuple[bytes, list[Box], tuple[int, int]]]:
    """The held-out set: (JPEG bytes, ground-truth boxes, (width, height)) per image, never trained or validated on."""
    out = []
    for index in range(count):
        image, boxes = render(TEST_SEED, index)
        out.append((encode(image), boxes, (image.shape[1], image.shape[0])))
    return out
