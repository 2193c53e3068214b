from python_models.runtime.triton.dali_guard_model import TritonPythonModel  # noqa: F401
