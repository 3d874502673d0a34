"""tfkd's modules depend one way down: cli -> deploy -> agents -> rl ->
distillation -> losses -> ops -> models. No module imports one above it, and
no tfkd module imports Keras' private ``keras.src``."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tfkd"
LAYERS = ["models", "ops", "losses", "distillation", "rl", "agents", "deploy", "cli"]


def _layer(module: str) -> int | None:
    """The layer of ``tfkd.X...`` (None for the package itself and non-tfkd modules)."""
    parts = module.split(".")
    if parts[0] != "tfkd" or len(parts) < 2:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            if node.module == "tfkd":  # `from tfkd import Distiller` (the lazy names)
                yield from (f"tfkd.{_LAZY.get(alias.name, alias.name)}" for alias in node.names)


_LAZY = {"Distiller": "distillation", "FeatureDistillation": "distillation",
         "KerasDistillationLoss": "distillation"}
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.name != "__init__.py")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_only(path):
    own = _layer("tfkd." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    for module in _imports(path):
        assert not module.startswith("keras.src"), f"{path.name} imports {module}"
        target = _layer(module)
        assert own is None or target is None or target <= own, (
            f"{path.relative_to(PACKAGE)} ({LAYERS[own]}) imports {module} "
            f"({LAYERS[target]}), a layer above it")
