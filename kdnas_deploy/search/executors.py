"""The executor registry: ``--executor NAME`` (or ``search.executor.name`` of a run config) picks one.

A factory imports optional engines when called, so Ray costs nothing until picked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kdnas_deploy.search.executor import Executor, LocalExecutor


def ray_executor(**options: Any) -> Executor:
    """The Ray executor (:mod:`.ray_executor`; imported when picked, so Ray costs nothing until then)."""
    from kdnas_deploy.search.ray_executor import RayExecutor

    return RayExecutor(**options)


# executor name -> factory(**options); a factory imports optional engines when called. Options such as a
# cluster address are passed through.
EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor, "ray": ray_executor}


def register_executor(name: str, factory: Callable[..., Executor]) -> None:
    EXECUTORS[name] = factory


def make_executor(name: str, **options: Any) -> Executor:
    """Executor ``name`` with ``options``; a factory whose engine is not installed is a one-line error."""
    from kdnas_deploy.errors import SearchError

    if name not in EXECUTORS:
        raise SearchError(f"unknown executor {name!r} (available: {', '.join(EXECUTORS)})")
    try:
        return EXECUTORS[name](**options)
    except ModuleNotFoundError as exc:
        raise SearchError(f"executor {name!r} is not available here ({exc.name} is not installed)") from None
    except TypeError as exc:
        raise SearchError(f"executor {name!r}: {exc}") from None
