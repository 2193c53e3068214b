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


def _draw(image: np.ndarray, cls: int, cx: float, cy: float, size: float, colour) -> tuple[int, int, int, int]:
    """Draw one shape of class ``cls`` centred at (cx, cy); the box of the pixels it drew (end-exclusive)."""
    box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
    if NAMES[cls] == "circle":
        cv2.circle(image, (round(cx), round(cy)), round(size / 2), colour, -1, cv2.LINE_AA)
        r = round(size / 2)
        return round(cx) - r, round(cy) - r, round(cx) + r + 1, round(cy) + r + 1
    if NAMES[cls] == "square":
        x1, y1 = round(box[0]), round(box[1])
        x2, y2 = round(box[2]), round(box[3])
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), colour, -1)
        return x1, y1, x2, y2
    points = np.array([[box[0], box[3]], [box[2], box[3]], [cx, box[1]]]).round().astype(np.int32)
    cv2.fillPoly(image, [points], colour, cv2.LINE_AA)
    return points[:, 0].min(), points[:, 1].min(), points[:, 0].max() + 1, points[:, 1].max() + 1


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
        drawn = _draw(image, cls, cx, cy, size, colour)
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


VIDEO_SIZE = (384, 288)
"""Width and height of the moving-shapes videos."""
VIDEO_SEEDS = (10, 11, 12)
"""The videos the tracking tests serve (distinct from the image sets' seeds)."""
MIN_VISIBLE = 0.5
"""An object is in a frame's ground truth while at least this share of its pixels shows (not outside the frame,
not behind another shape): what a detector can be asked to find."""


@dataclass(frozen=True)
class Mover:
    """A shape moving in a straight line: centre ``start + velocity * t`` from frame ``born`` on."""

    cls: int
    size: float
    colour: tuple[int, int, int]
    start: tuple[float, float]
    velocity: tuple[float, float]
    born: int = 0

    def centre(self, t: int) -> tuple[float, float]:
        age = t - self.born
        return self.start[0] + self.velocity[0] * age, self.start[1] + self.velocity[1] * age


@dataclass(frozen=True)
class Truth:
    """An object in one frame: its identity (the same in every frame of a video) and the box of its visible pixels."""

    identity: int
    box: Box
    visible: float


def _colour_against(rng: np.random.Generator, background: np.ndarray, points: list[tuple[float, float]]):
    """A colour far from the background wherever the shape passes, so it shows on the whole path."""
    height, width = background.shape[:2]
    local = np.array([background[int(np.clip(y, 0, height - 1)), int(np.clip(x, 0, width - 1))] for x, y in points], int)
    while True:
        colour = rng.integers(0, 256, 3)
        if np.abs(local - colour).sum(axis=1).min() >= 150:
            return tuple(int(v) for v in colour)


def _scene(rng: np.random.Generator, background: np.ndarray, frames: int) -> list[Mover]:
    """The objects of a video, back to front: two that cross each other in the middle (the one in front hides the
    other for a few frames), one passing behind a large slow shape, one entering through an edge mid-video, one
    leaving through an edge, and one or two anywhere."""
    height, width = background.shape[:2]
    mid = frames / 2
    plans = []
    # crossing pair: opposite directions on nearly the same row, meeting at the centre at mid-video
    row = rng.uniform(0.3, 0.7) * height
    speed = rng.uniform(3, 5)
    for direction in (1, -1):
        plans.append((rng.uniform(34, 50), (width / 2 - direction * speed * mid, row + rng.uniform(-6, 6)),
                      (direction * speed, rng.uniform(-0.3, 0.3)), 0))
    # a small shape passing behind a large slow one (the large one is drawn later, in front)
    hidden_row = rng.uniform(0.2, 0.8) * height
    behind = (rng.uniform(26, 34), (rng.uniform(-10, 30), hidden_row), (rng.uniform(3, 4.5), 0.0), 0)
    front_x = behind[1][0] + behind[2][0] * frames * 0.55
    plans.append(behind)
    # entering from the top or bottom edge half way through
    edge = rng.integers(0, 2)
    size = rng.uniform(36, 56)
    plans.append((size, (rng.uniform(0.2, 0.8) * width, -size / 2 if edge == 0 else height + size / 2),
                  (rng.uniform(-1, 1), rng.uniform(3, 5) * (1 if edge == 0 else -1)), int(frames * 0.4)))
    # leaving through the left or right edge
    edge = rng.integers(0, 2)
    plans.append((rng.uniform(36, 56), (rng.uniform(0.15, 0.4) * width if edge == 0 else rng.uniform(0.6, 0.85) * width,
                                        rng.uniform(0.2, 0.8) * height),
                  ((-1 if edge == 0 else 1) * rng.uniform(4, 6), rng.uniform(-1, 1)), 0))
    for _ in range(int(rng.integers(1, 3))):
        plans.append((rng.uniform(30, 60), (rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height),
                      tuple(rng.uniform(-2.5, 2.5, 2)), 0))
    plans.append((rng.uniform(80, 96), (front_x, hidden_row + rng.uniform(-4, 4)), (rng.uniform(-0.4, 0.4), 0.0), 0))
    movers = []
    for size, start, velocity, born in plans:
        path = [(start[0] + velocity[0] * a, start[1] + velocity[1] * a) for a in range(0, frames - born, 4)]
        movers.append(Mover(int(rng.integers(0, len(NAMES))), float(size), _colour_against(rng, background, path),
                            (float(start[0]), float(start[1])), (float(velocity[0]), float(velocity[1])), born))
    return movers


def moving_video(seed: int, frames: int) -> tuple[list[np.ndarray], list[list[Truth]]]:
    """Video ``seed``: its BGR frames (a still camera, sensor noise changing every frame) and each frame's ground
    truth, identities from 1 in drawing order."""
    rng = np.random.default_rng([seed, 1_000_003])
    width, height = VIDEO_SIZE
    background = _background(rng, height, width)
    movers = _scene(rng, background, frames)
    pad = 128  # shapes partly outside the frame are drawn whole on a larger canvas, to measure what shows
    video, truth = [], []
    for t in range(frames):
        noise = np.random.default_rng([seed, t]).normal(0, 3, background.shape)
        canvas = np.zeros((height + 2 * pad, width + 2 * pad, 3), np.uint8)
        canvas[pad:pad + height, pad:pad + width] = np.clip(background + noise, 0, 255).astype(np.uint8)
        masks = []
        for mover in movers:
            if t < mover.born:
                masks.append(None)
                continue
            cx, cy = mover.centre(t)
            mask = np.zeros(canvas.shape[:2], np.uint8)
            _draw(mask, mover.cls, cx + pad, cy + pad, mover.size, 255)
            _draw(canvas, mover.cls, cx + pad, cy + pad, mover.size, mover.colour)
            masks.append(mask > 0)
        in_front = np.zeros(canvas.shape[:2], bool)
        objects = []
        for identity in range(len(movers), 0, -1):
            mask = masks[identity - 1]
            if mask is None:
                continue
            shows = mask & ~in_front
            in_front |= mask
            shows = shows[pad:pad + height, pad:pad + width]
            visible = shows.sum() / max(mask.sum(), 1)
            if visible >= MIN_VISIBLE:
                ys, xs = np.nonzero(shows)
                objects.append(Truth(identity, Box(movers[identity - 1].cls, float(xs.min()), float(ys.min()),
                                                   float(xs.max() + 1), float(ys.max() + 1)), float(visible)))
        video.append(canvas[pad:pad + height, pad:pad + width].copy())
        truth.append(sorted(objects, key=lambda o: o.identity))
    return video, truth
