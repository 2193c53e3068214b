"""Write model_repository/*/config.pbtxt, the version-folder entry files (model.py, dali.py), warm-up inputs and the
README's map of tracks to modules from python_models/build/repository.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from python_models.build.repository import (  # noqa: E402
    MAP_BEGIN,
    MAP_END,
    architecture_map,
    model_definitions,
    to_pbtxt,
    version_files,
    warmup_files,
)


def readme_with_map(readme: str) -> str:
    """The README with the block between the map markers replaced by the generated map."""
    start, end = readme.find(MAP_BEGIN), readme.find(MAP_END)
    if start < 0 or end < start:
        raise SystemExit(f"README.md has no map markers ({MAP_BEGIN} ... {MAP_END})")
    return readme[:start] + architecture_map() + readme[end + len(MAP_END) + 1:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--check", action="store_true", help="fail if a committed config differs; write nothing")
    args = parser.parse_args()
    stale = []
    for definition in model_definitions():
        folder = args.repository / definition.name
        wanted = {folder / "config.pbtxt": to_pbtxt(definition.config).encode()}
        wanted.update({folder / "1" / name: text.encode() for name, text in version_files(definition).items()})
        wanted.update({folder / "warmup" / name: data for name, data in warmup_files(definition).items()})
        for path, data in wanted.items():
            if path.exists() and path.read_bytes() == data:
                continue
            stale.append(path)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        version = folder / "1"
        if not args.check:
            version.mkdir(parents=True, exist_ok=True)
            keep = version / ".gitkeep"
            # git keeps no empty folders, and Triton needs the version folder even when empty.
            has_files = any(p.parent == version for p in wanted)
            if not has_files and not keep.exists():
                keep.touch()
            elif has_files and keep.exists():
                keep.unlink()
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
