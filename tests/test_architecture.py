"""The package's roles stay apart: what runs inside Triton imports nothing from the export, serving or client code,
and client code depends on the contract, not on the runtime's internals (python_models/__init__.py)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python_models"
ALLOWED = {
    "contract": set(),
    "runtime": {"contract", "runtime"},
    "export": {"contract", "runtime", "export"},
    "serving": {"contract", "runtime", "export", "serving"},
    "client": {"contract", "client"},
    # The commands (yolo11-triton): over everything; nothing but ``python -m python_models`` imports them.
    "cli": {"contract", "runtime", "export", "serving", "client", "cli"},
    "__main__": {"cli"},
    "package": set(),
}


def role(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts == ("__init__",):
        return "package"
    return parts[0]


def imported_roles(source: str) -> list[tuple[int, str, str]]:
    """(line, imported module, its role) for every import of ``python_models``, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [(alias.name, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "python_models":  # from python_models import contract, export, ...
                modules = [(f"python_models.{alias.name}", f"python_models.{alias.name}") for alias in node.names]
            else:
                modules = [(node.module, node.module)]
        else:
            continue
        for name, _ in modules:
            parts = name.split(".")
            if parts[0] == "python_models" and len(parts) > 1:
                found.append((node.lineno, name, parts[1]))
    return found


def violations(files: dict[Path, str]) -> list[str]:
    problems = []
    for path, source in files.items():
        mine = role(path)
        for line, module, target in imported_roles(source):
            if target not in ALLOWED[mine]:
                problems.append(f"{path.relative_to(PACKAGE)}:{line}: {mine} imports {module} ({target})")
    return problems


def package_sources() -> dict[Path, str]:
    return {path: path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_subpackage_has_a_role_and_says_what_it_may_import():
    roles = {role(path) for path in package_sources()}
    assert roles == set(ALLOWED), roles
    for name in ("runtime", "export", "serving", "client", "cli"):
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        assert doc and "May import" in doc, f"{name}/__init__.py must say what it may import"


def test_no_import_crosses_the_boundaries():
    assert violations(package_sources()) == []


def test_the_boundary_check_fires_on_a_planted_import():
    files = package_sources()
    guard = PACKAGE / "runtime" / "triton" / "dali_guard_model.py"
    files[guard] += "\n\ndef _planted():\n    from python_models.client.matching import differences  # noqa: F401\n"
    client = PACKAGE / "client" / "__init__.py"
    files[client] += "\nfrom python_models.runtime.decode import decode  # noqa: E402,F401\n"
    contract = PACKAGE / "contract.py"
    files[contract] += "\nfrom python_models import export  # noqa: E402,F401\n"
    problems = violations(files)
    assert len(problems) == 3, problems
    assert any("runtime imports python_models.client.matching" in p for p in problems)
    assert any("client imports python_models.runtime.decode" in p for p in problems)
    assert any("contract imports python_models.export" in p for p in problems)

