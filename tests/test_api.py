"""The Python API: every name the package and the README import is the documented object."""

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import kdnas_deploy

README = Path(__file__).resolve().parents[1] / "README.md"

FUNCTIONS = {"build_table", "get_backend", "validate_table", "get_task", "finetune_teacher", "distill",
             "evaluate_model", "run_search", "export_model", "run_bench", "run_pipeline"}  # fmt: skip
CLASSES = {"Architecture", "KdnasError", "SearchSpace", "LatencyTable", "FinetuneConfig", "DistillConfig",
           "ExportOptions", "BenchConfig", "PipelineConfig"}  # fmt: skip


def _is_documented_kind(obj: object) -> bool:
    from kdnas_deploy.config import Presets

    # a preset registry (``PRESETS.get("quick", ...)``) is documented as the object it is, like optimum's factories
    return inspect.isfunction(obj) or inspect.isclass(obj) or isinstance(obj, Presets)


def test_all_is_exactly_the_documented_names():
    assert set(kdnas_deploy.__all__) == FUNCTIONS | CLASSES


@pytest.mark.parametrize("name", sorted(FUNCTIONS | CLASSES))
def test_every_api_name_is_its_function_or_class(name):
    obj = getattr(kdnas_deploy, name)
    assert (inspect.isfunction if name in FUNCTIONS else inspect.isclass)(obj), (name, obj)
    assert obj.__name__ == name
    if name in kdnas_deploy._LAZY:  # the same object as in the module that defines it
        assert obj is getattr(importlib.import_module(kdnas_deploy._LAZY[name]), name)


def test_distill_stays_the_function_after_its_subpackage_is_imported():
    code = (
        "import inspect, kdnas_deploy.distill.engine, kdnas_deploy.distill.finetune\n"
        "from kdnas_deploy import distill\n"
        "import kdnas_deploy\n"
        "assert inspect.isfunction(distill) and callable(distill), distill\n"
        "assert kdnas_deploy.distill is distill\n"
        "from kdnas_deploy.distill import DistillConfig, distill as d2, engine\n"
        "assert d2 is distill and inspect.ismodule(engine) and inspect.isclass(DistillConfig)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _readme_imports() -> list[tuple[str, str]]:
    """(module, name) of every ``from kdnas_deploy... import name`` in the README's python blocks."""
    found = []
    for block in re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kdnas_deploy"):
                found += [(node.module, alias.name) for alias in node.names]
    return found


def test_readme_has_api_imports():
    assert len(_readme_imports()) >= len(FUNCTIONS | CLASSES)


@pytest.mark.parametrize("module,name", _readme_imports())
def test_every_readme_import_is_a_function_or_class(module, name):
    obj = getattr(importlib.import_module(module), name)
    assert _is_documented_kind(obj), f"from {module} import {name} gives {obj!r}"
    if module == "kdnas_deploy" and name in FUNCTIONS | CLASSES:
        assert (inspect.isfunction if name in FUNCTIONS else inspect.isclass)(obj), (name, obj)


def test_import_is_light():
    code = ("import sys, kdnas_deploy; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
