from python_models.triton.image_guard_model import TritonPythonModel  # noqa: F401
