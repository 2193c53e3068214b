"""``python -m python_models``: the ``yolo11-triton`` command (``python_models.cli``)."""

import sys

from python_models.cli import main

sys.exit(main())
