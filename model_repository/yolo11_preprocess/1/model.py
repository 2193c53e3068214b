from python_models.triton.preprocess_model import TritonPythonModel  # noqa: F401
