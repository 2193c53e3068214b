"""Write model_repository/*/config.pbtxt from python_models/repository.py (the single definition)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from python_models.repository import model_definitions, to_pbtxt  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--check", action="store_true", help="fail if a committed config differs; write nothing")
    args = parser.parse_args()
    stale = []
    for definition in model_definitions():
        path = args.repository / definition.name / "config.pbtxt"
        text = to_pbtxt(definition.config)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            version = path.parent / "1"
            version.mkdir(exist_ok=True)
            if not any(version.iterdir()):
                # git keeps no empty folders, and Triton needs the version folder even when empty.
                (version / ".gitkeep").touch()
    for path in stale:
        print(("stale: " if args.check else "wrote: ") + str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
