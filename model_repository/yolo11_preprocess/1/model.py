from python_models.runtime.triton.preprocess_model import TritonPythonModel  # noqa: F401
