from python_models.runtime.triton.image_guard_model import TritonPythonModel  # noqa: F401
