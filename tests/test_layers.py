"""The layers point one way (docs/architecture.md): every `genlab` import in the package, at module
level or inside a function, goes down the stack, never up or sideways between metrics and viz."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "genlab"

# what each layer may not import (by top-level sub-package of genlab)
FORBIDDEN = {
    "data": {"nn", "models", "train", "metrics", "viz", "apps", "cli"},
    "nn": {"models", "train", "metrics", "viz", "apps", "cli"},
    "models": {"train", "metrics", "viz", "apps", "cli"},
    "metrics": {"models", "train", "viz", "apps", "cli"},
    "viz": {"models", "train", "metrics", "apps", "cli"},
    "train": {"apps", "cli"},
    "apps": {"cli"},
}


def genlab_imports(path: Path) -> list[tuple[int, str]]:
    """(line, sub-package) of every `import genlab.X...` / `from genlab.X... import` in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "genlab" else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "genlab" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def modules_of(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer):
    assert modules_of(layer), f"no modules found under {PACKAGE / layer}"
    upward = [f"{path.relative_to(PACKAGE)}:{line} imports genlab.{target}"
              for path in modules_of(layer) for line, target in genlab_imports(path) if target in FORBIDDEN[layer]]  # fmt: skip
    assert not upward, "\n".join(upward)


def test_the_import_finder_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from genlab.train.run import load_model\n    import genlab.viz\n")
    assert genlab_imports(source) == [(4, "train"), (5, "viz")]
