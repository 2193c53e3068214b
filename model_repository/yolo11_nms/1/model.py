from python_models.runtime.triton.nms_model import TritonPythonModel  # noqa: F401
