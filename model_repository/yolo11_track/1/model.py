from python_models.runtime.triton.track_model import TritonPythonModel  # noqa: F401
