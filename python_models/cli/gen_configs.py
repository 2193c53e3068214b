"""Write model_repository/*/config.pbtxt, the version-folder entry files (model.py, dali.py), warm-up inputs, and the
docs' generated blocks: the map of tracks to modules in docs/tracks.md (python_models/export/repository.py) and the
table of memory pools in docs/production.md (python_models/serving/triton.py), for the default export (yolo11n.pt:
COCO's 80 classes at 640). yolo11-triton export writes the same model files for whatever model it exports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from python_models.cli.paths import ROOT  # noqa: E402

from python_models.export.repository import default_spec  # noqa: E402
from python_models.export.repository_files import write_repository  # noqa: E402
from python_models.export.track_map import MAP_BEGIN, MAP_END, architecture_map  # noqa: E402
from python_models.serving.triton import POOLS_BEGIN, POOLS_END, memory_pools_table  # noqa: E402


GENERATED = {
    "docs/tracks.md": (MAP_BEGIN, MAP_END, architecture_map),
    "docs/production.md": (POOLS_BEGIN, POOLS_END, lambda: memory_pools_table(default_spec())),
}
"""Each page with a block the code writes, between its markers."""


def with_generated_block(page: str, begin: str, end_marker: str, text: str, name: str) -> str:
    """``page`` with the block between ``begin`` and ``end_marker`` replaced by ``text``."""
    start, end = page.find(begin), page.find(end_marker)
    if start < 0 or end < start:
        raise SystemExit(f"{name} has no generated-block markers ({begin} ... {end_marker})")
    return page[:start] + text + page[end + len(end_marker) + 1:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--check", action="store_true", help="fail if a committed config differs; write nothing")
    args = parser.parse_args(argv)
    stale = write_repository(args.repository, default_spec(), check=args.check)
    if args.repository.resolve() == (ROOT / "model_repository").resolve():
        for name, (begin, end_marker, generate) in GENERATED.items():
            page = ROOT / name
            text = page.read_text()
            wanted = with_generated_block(text, begin, end_marker, generate(), name)
            if wanted != text:
                stale.append(page)
                if not args.check:
                    page.write_text(wanted)
    for path in stale:
        print(("stale: " if args.check else "wrote: ") + str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
