"""Fails at load time, as a model with a missing or foreign artifact does."""


class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("deliberately failing to load (tests/models_failing)")

    def execute(self, requests):  # pragma: no cover - never loaded
        raise RuntimeError("unreachable")
