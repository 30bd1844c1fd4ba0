"""kdnas-deploy: hardware-aware KD-NAS for small transformer students.

The Python API mirrors the CLI, one name per command; heavy libraries load only when a name is used::

    from kdnas_deploy import (
        Architecture, SearchSpace,                       # value types
        LatencyTable, build_table, get_backend, validate_table,   # latency build / predict / validate
        get_task, finetune_teacher, FinetuneConfig,      # teacher finetune
        distill, DistillConfig, evaluate_model,          # distill / evaluate
        run_search,                                      # search
        export_model, ExportOptions,                     # export
        run_bench, BenchConfig,                          # bench
        run_pipeline, PipelineConfig,                    # run
    )
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import KdnasError
from kdnas_deploy.space import SearchSpace

__version__ = "0.1.0"

_LAZY = {
    "LatencyTable": "kdnas_deploy.latency.table",
    "build_table": "kdnas_deploy.latency.profiler",
    "get_backend": "kdnas_deploy.latency.backends",
    "validate_table": "kdnas_deploy.latency.validate",
    "get_task": "kdnas_deploy.tasks",
    "finetune_teacher": "kdnas_deploy.distill.finetune",
    "FinetuneConfig": "kdnas_deploy.distill.finetune",
    "distill": "kdnas_deploy.distill",
    "DistillConfig": "kdnas_deploy.distill",
    "evaluate_model": "kdnas_deploy.distill.evaluate",
    "run_search": "kdnas_deploy.search.api",
    "export_model": "kdnas_deploy.export.exporter",
    "ExportOptions": "kdnas_deploy.export.exporter",
    "run_bench": "kdnas_deploy.export.bench",
    "BenchConfig": "kdnas_deploy.export.bench",
    "run_pipeline": "kdnas_deploy.pipeline.run",
    "PipelineConfig": "kdnas_deploy.pipeline.config",
}

__all__ = ["Architecture", "KdnasError", "SearchSpace", *_LAZY]


# API names that are also the names of subpackages: ``kdnas_deploy.distill`` is the function the README documents,
# not the package ``kdnas_deploy/distill/``. Importing a subpackage makes Python bind it on its parent
# (``setattr(kdnas_deploy, "distill", <module>)``), which would replace the function; ``_Package`` refuses that
# one binding. The package stays importable by its dotted name (``from kdnas_deploy.distill import engine``,
# ``import kdnas_deploy.distill.engine``, ``sys.modules``); only attribute access through ``kdnas_deploy``
# (``import kdnas_deploy.distill.engine as e``, string targets of ``mock.patch``) sees the function.
_SHADOWED = frozenset(name for name, module in _LAZY.items() if module == f"{__name__}.{name}")


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    raise AttributeError(f"module 'kdnas_deploy' has no attribute {name!r}")


sys.modules[__name__].__class__ = _Package
for _name in _SHADOWED:  # a subpackage imported while this file ran was already bound
    if isinstance(globals().get(_name), types.ModuleType):
        del globals()[_name]
