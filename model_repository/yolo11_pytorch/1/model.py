from python_models.triton.pytorch_model import TritonPythonModel  # noqa: F401
