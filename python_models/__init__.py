"""Serving Ultralytics YOLO detection on Triton, four ways behind one contract. One subpackage per role:

- ``contract``: the one definition of names, I/O, tiers, defaults and ``ModelSpec`` (what an export serves: classes,
  names, image size, thresholds). Imports nothing of ours.
- ``runtime``: what runs inside Triton in production: preprocessing, the network, NMS, the DALI graph, and the
  thin ``TritonPythonModel`` adapters. Imports ``contract`` only.
- ``export``: what builds the model repository: weights, the artifacts, the End2End graph, configs, plans, the pinned
  release. Imports ``contract`` and ``runtime``.
- ``serving``: what starts and watches a server: finding ``tritonserver``, its command line, the CPU profile's
  layout and twins, the stub supervisor, status. Imports ``contract``, ``runtime`` and ``export``.
- ``client``: what a client runs: packing, unpacking with class names, the contract check, matching, COCO mAP,
  metrics, perf_analyzer, the self-check of a live server. Imports ``contract`` only.
- ``cli``: the ``yolo11-triton`` command (``python -m python_models``), one module per subcommand. Imports
  everything; nothing imports it.

``tests/test_architecture.py`` fails when an import crosses these lines the forbidden way.
"""
