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
    # base: imports nothing of ours but itself
    "paths": 0,
    "errors": 0,
    "specs": 0,
    "labels": 0,
    "child": 0,
    "system": 0,
    # files and data
    "preprocess": 1,
    "tflite_file": 1,
    "calibration": 1,
    "torch_weights": 1,
    "recipes": 1,
    "metadata_schema": 0,
    "tflite_metadata": 1,
    "browser_file": 1,
    "op_models": 1,
    # builders of Keras models
    "efficientnet_lite": 2,
    "fashion_mnist": 2,
    "builders": 2,
    # engine: conversion, and runners built from a model or a file
    "runners": 3,
    "convert": 3,
    "convert_worker": 3,
    "quantize_worker": 3,
    "sensitivity_worker": 3,
    # the zoo as data; loading; models people bring; the shared runner cache
    "zoo": 4,
    "loading": 4,
    "custom": 4,
    "inspect_worker": 4,
    "runner_cache": 4,
    "saved_variants": 4,
    "background": 4,
    "catalog": 4,
    # use: pipeline, benchmark, evaluation, command line
    "pipeline": 5,
    "benchmark": 5,
    "evaluate": 5,
    "layers": 5,
    "autoquant": 5,
    "sensitivity": 5,
    "cli": 5,
    "__main__": 5,
}


def _imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` that ``path`` imports anywhere (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from inference import zoo` imports the submodule; `from inference import X`
            # of a name imports the package root.
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [
                s if (REPO_ROOT / s.replace(".", "/")).with_suffix(".py").is_file() else node.module
                for s in submodules
            ]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == package:
                found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def _graph() -> dict[str, set[str]]:
    return {path.stem: _imports(path, "inference") for path in sorted(PACKAGE.glob("*.py"))}


def test_every_module_has_a_layer() -> None:
    modules = {m for m in _graph() if m != "__init__"}
    assert modules == set(LAYERS), "place new modules in LAYERS; remove deleted ones"


def test_modules_import_only_from_their_layer_or_below() -> None:
    upward = [
        f"{module} (layer {LAYERS[module]}) imports {target} (layer {LAYERS[target]})"
        for module, targets in _graph().items()
        if module != "__init__"
        for target in targets
        if target != "__init__" and LAYERS[target] > LAYERS[module]
    ]
    assert upward == []


def test_no_module_imports_the_package_root() -> None:
    # The root re-exports the public API from every layer; importing it from inside
    # would tie each module to all the others.
    offenders = [m for m, targets in _graph().items() if m != "__init__" and "__init__" in targets]
    assert offenders == []


def test_there_is_no_import_cycle() -> None:
    graph = {m: {t for t in targets if t != "__init__"} for m, targets in _graph().items()}
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
    module.write_text("def f():\n    from inference.zoo import ZOO\n    import inference.cli\n")

    assert _imports(module, "inference") == {"zoo", "cli"}


def test_api_never_imports_ui() -> None:
    for path in (REPO_ROOT / "api").glob("*.py"):
        assert _imports(path, "ui") == set(), f"{path.name} imports ui/"
