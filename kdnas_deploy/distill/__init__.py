"""distill stage: teachers, the knowledge-distillation engine and evaluation.

Public API (heavy libraries are imported only when a function runs)::

    from kdnas_deploy.distill import DistillConfig, DistillResult, distill
"""

from kdnas_deploy.distill.config import DISTILL_PRESETS, DistillConfig
from kdnas_deploy.distill.engine import DistillResult, distill, prepare_teacher_cache

__all__ = ["DISTILL_PRESETS", "DistillConfig", "DistillResult", "distill", "prepare_teacher_cache"]
