from python_models.runtime.triton.pytorch_model import TritonPythonModel  # noqa: F401
