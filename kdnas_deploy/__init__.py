"""kdnas-deploy: hardware-aware KD-NAS for small transformer students.

The Python API mirrors the CLI; heavy libraries are imported only when a stage runs.
"""

from kdnas_deploy.arch import Architecture
from kdnas_deploy.errors import KdnasError
from kdnas_deploy.space import SearchSpace

__all__ = ["Architecture", "KdnasError", "SearchSpace"]
__version__ = "0.1.0"
