"""What builds the model repository: resolving weights (``weights``), exporting them (``artifacts``), the End2End graph
and its FP16 form (``end2end``), every model config (``repository``), the repository's files on disk
(``repository_files``), what the CPU profile serves instead (``cpu_configs``), the docs' map of tracks to modules
(``track_map``), TensorRT plans (``engine_build``), the NGC release production runs (``deployment``), and its
image build rehearsed off the GPU host (``image_build``).

May import: ``python_models.contract``, ``python_models.runtime`` (the untrained test network letterboxes its
calibration images) and this package. Never ``serving``, ``client`` or ``cli``.

(Named ``export``, not ``build``: a folder named build/ is ignored by the stock Python .gitignore.)
"""
