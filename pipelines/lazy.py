"""Package attributes that load their module on first use (PEP 562 ``__getattr__``).

A package uses it where importing its public surface eagerly would be circular or costly: the
state file's table list imports ``compliance.schema`` for every run, and every ``recycle``
command imports ``pipelines.server``; neither should load FastAPI or plotly for that.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: each name in ``where`` from the module it names."""

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
