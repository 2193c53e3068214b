"""Write model_repository/*/config.pbtxt, the version-folder entry files (model.py, dali.py) and warm-up inputs
from python_models/repository.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from python_models.repository import model_definitions, to_pbtxt, version_files, warmup_files  # noqa: E402


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
    for path in stale:
        print(("stale: " if args.check else "wrote: ") + str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
