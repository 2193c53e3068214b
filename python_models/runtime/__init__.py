"""What runs inside Triton in production: encoded bytes to boxes, and the adapters Triton calls.

``decode`` (a row's bytes to pixels, or the reason not), ``threads`` (how many rows decode at once), ``letterbox``
(pixels to the network's input, and boxes back), ``gpu_decode`` (the same on a GPU), ``network`` (Track A's forward,
eager or from CUDA graphs), ``nms`` (Ultralytics' NMS and the fixed-size packing), ``dali_letterbox`` (Track D's DALI graph) and
``triton/`` (the ``TritonPythonModel`` adapters ``model_repository/*/1/model.py`` import).

May import: ``python_models.contract`` and this package. Never ``export``, ``serving``, ``client`` or ``cli``: a Triton
stub loads only what serving needs.
"""
