"""Optional dependencies: imported only inside the function that needs them, never at import time.

``import wrdsvault`` stays cheap and works without any extra installed; a feature that needs one
calls `require` and gets the module, or a `MissingExtraError` naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from wrdsvault.errors import MissingExtraError

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` (e.g. ``"polars"``), the package of the extra ``extra`` (``"polars"``).

    Raises:
        MissingExtraError: it is not installed, or fails to import; the message says
            ``pip install 'wrdsvault[<extra>]'``. The import error is its ``__cause__``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module=module, extra=extra) from exc
