"""What starts and watches a server: finding ``tritonserver`` and building its command line (``triton``), the CPU
profile's repository (``cpu_profile``) and the Python twins that stand in there for TensorRT and DALI leaves
(``twins/``), the stub supervisor (``supervisor``), and what a launcher asks a running server (``status``).

May import: ``python_models.contract``, ``runtime`` (the twins reuse its adapters and DALI graph), ``export`` (the
layout is derived from the configs and exports) and this package. Never ``client``.
"""
