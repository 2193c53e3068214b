"""The tracking model with a planted bug: each frame starts its stream afresh (see config.pbtxt)."""

from python_models.runtime.triton.track_model import TritonPythonModel as Tracking


class TritonPythonModel(Tracking):
    def initialize(self, args: dict) -> None:
        super().initialize(args)
        frame = self.streams.frame
        self.streams.frame = lambda stream, detections, now, start=False, end=False: frame(stream, detections, now,
                                                                                          True, end)
