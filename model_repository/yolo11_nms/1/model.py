from python_models.triton.nms_model import TritonPythonModel  # noqa: F401
