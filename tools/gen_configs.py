"""Write model_repository/*/config.pbtxt, the version-folder entry files (model.py, dali.py), warm-up inputs, and the
README's map of tracks to modules (python_models/build/repository.py) and table of memory pools
(python_models/serving/triton.py), for the default export (yolo11n.pt: COCO's 80 classes at 640). tools/export.py
writes the same files for whatever model it exports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from python_models.build.repository import MAP_BEGIN, MAP_END, architecture_map, default_spec, write_repository  # noqa: E402
from python_models.serving.triton import POOLS_BEGIN, POOLS_END, memory_pools_table  # noqa: E402


def readme_with_map(readme: str) -> str:
    """The README with the blocks between the map's and the pools' markers replaced by what the code generates."""
    for begin, end_marker, text in ((MAP_BEGIN, MAP_END, architecture_map()),
                                    (POOLS_BEGIN, POOLS_END, memory_pools_table(default_spec()))):
        start, end = readme.find(begin), readme.find(end_marker)
        if start < 0 or end < start:
            raise SystemExit(f"README.md has no generated-block markers ({begin} ... {end_marker})")
        readme = readme[:start] + text + readme[end + len(end_marker) + 1:]
    return readme


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--check", action="store_true", help="fail if a committed config differs; write nothing")
    args = parser.parse_args()
    stale = write_repository(args.repository, default_spec(), check=args.check)
    readme = ROOT / "README.md"
    if args.repository.resolve() == (ROOT / "model_repository").resolve():
        text = readme.read_text()
        wanted_readme = readme_with_map(text)
        if wanted_readme != text:
            stale.append(readme)
            if not args.check:
                readme.write_text(wanted_readme)
    for path in stale:
        print(("stale: " if args.check else "wrote: ") + str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
