"""Optional dependencies: imported only by the function that needs them, never at import time.

`require` imports a module of an extra (``fsspec`` of ``s3``, ...) and turns a missing one into
`MissingExtraError`, whose message names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from wrdsvault.errors import MissingExtraError

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise `MissingExtraError` naming ``pip install 'wrdsvault[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module=module, extra=extra, reason=str(exc)) from exc
