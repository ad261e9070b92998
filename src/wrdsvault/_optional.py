"""Optional dependencies: imported only by the function that needs one, named by their extra.

``import wrdsvault`` never imports an optional package; a feature that needs one calls `require`
when it runs, so a missing package is one clear error that names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from wrdsvault.errors import MissingExtraError

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise `MissingExtraError` naming ``pip install 'wrdsvault[extra]'``.

    Raises:
        MissingExtraError: the module (or one it imports) is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module=module, extra=extra, reason=str(exc)) from exc
