"""The untrained test network is deterministic and detects something on real photos."""

from __future__ import annotations

import numpy as np
import torch

from python_models.detector import calibration_images, untrained_detector
from python_models.letterbox import letterbox
from python_models.nms import nms


def test_untrained_detector_is_deterministic_and_image_dependent():
    a, b = untrained_detector(), untrained_detector()
    batch = torch.from_numpy(np.stack([letterbox(i)[0] for i in calibration_images()[:2]]))
    with torch.no_grad():
        ya = a.model.eval()(batch)[0]
        yb = b.model.eval()(batch)[0]
    torch.testing.assert_close(ya, yb)
    detections = nms(ya)
    assert all(len(d) > 0 for d in detections), "the test weights must detect on the sample images"
    assert not np.allclose(detections[0][:3, :4], detections[1][:3, :4]), "boxes must depend on the image"
