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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kdnas_deploy' has no attribute {name!r}")
