"""The package's layers: each module imports only from layers below it, and nothing cycles.

Every import counts, including those written inside functions (the lazy
TensorFlow/Keras ones are not ours, so they do not appear here). A new module
must be given a layer below, which is the point: it makes its place explicit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "inference"
LAYERS: dict[str, int] = {
    "core": 0,  # paths, errors, specs, labels, machine facts, child processes
    "formats": 1,  # images, .tflite files and metadata, one-op models, recipes, calibration
    "models": 2,  # Keras builders: EfficientNet-Lite, keras.applications, Fashion-MNIST
    "engine": 3,  # conversion, quantization, runners; workers/ are the child processes
    "registry": 4,  # the zoo, your models, saved and session variants, runner cache, jobs
    "analysis": 5,  # benchmark, evaluation, layer report, sensitivity, search
    "pipeline": 5,  # the one pipeline every front end calls
    "cli": 6,  # one module per command
    "__main__": 7,
}
"""Each top-level package or module of ``inference/`` and its layer: a module imports only
from its own package, or from packages of its layer or below."""
MAX_TOP_LEVEL_MODULES = 8
MAX_MODULE_LINES = 500
VENDORED = "_vendor"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``inference.core.errors``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` that ``path`` imports anywhere (top level or inside functions)."""
    known = _modules() if package == "inference" else {}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from inference.core import errors` imports the submodule; `from
            # inference.core import X` of a name imports the package itself.
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in known
                else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] == package)
    return found


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[1]]


def _graph() -> dict[str, set[str]]:
    return {name: _imports(path, "inference") for name, path in _modules().items()}


def test_every_package_has_a_layer() -> None:
    top = {name.split(".")[1] for name in _modules() if name != "inference"}
    assert top == set(LAYERS), "give new packages a layer in LAYERS; remove deleted ones"


def test_the_package_shows_its_layers_as_folders() -> None:
    modules = [p for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, sorted(p.name for p in modules)


def test_no_module_passes_500_lines() -> None:
    long = [
        f"{name}: {len(path.read_text().splitlines())}"
        for name, path in _modules().items()
        if VENDORED not in path.parts and len(path.read_text().splitlines()) > MAX_MODULE_LINES
    ]
    assert long == []


def test_modules_import_only_from_their_layer_or_below() -> None:
    upward = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in _graph().items()
        if module != "inference"
        for target in targets
        if target != "inference" and _layer(target) > _layer(module)
    ]
    assert upward == []


def test_no_module_imports_the_package_root() -> None:
    # The root re-exports the public API from every layer; importing it from inside
    # would tie each module to all the others.
    offenders = [
        m for m, targets in _graph().items() if m != "inference" and "inference" in targets
    ]
    assert offenders == []


def test_there_is_no_import_cycle() -> None:
    graph = {m: {t for t in targets if t != "inference"} for m, targets in _graph().items()}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            cycle = [*visiting[visiting.index(module) :], module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        visiting.append(module)
        for target in sorted(graph.get(module, ())):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_cycle_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text(
        "def f():\n    from inference.registry.zoo import ZOO\n    import inference.cli\n"
    )

    assert _imports(module, "inference") == {"inference.registry.zoo", "inference.cli"}


def test_api_never_imports_ui() -> None:
    for path in (REPO_ROOT / "api").glob("*.py"):
        assert _imports(path, "ui") == set(), f"{path.name} imports ui/"
