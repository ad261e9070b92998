"""Optional dependencies: imported only by the function that needs them, never at import time.

Each lives in an extra of its own (``pip install 'wrdsvault[polars]'``); `require` imports one
and, when it is missing, raises `MissingExtraError` naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from wrdsvault.errors import MissingExtraError

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``; if it is not installed, raise `MissingExtraError` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module=module, extra=extra, reason=str(exc)) from exc
