"""Results as polars DataFrames (the optional extra ``polars``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wrdsvault._optional import require

if TYPE_CHECKING:
    import pyarrow as pa


def require_polars() -> Any:
    """The polars module (`MissingExtraError` naming the extra if it is missing)."""
    return require("polars", "polars")


def from_arrow(table: pa.Table) -> Any:
    """``table`` as a polars DataFrame, sharing its Arrow buffers where polars can (no rechunk).

    Raises:
        MissingExtraError: polars is not installed (``pip install 'wrdsvault[polars]'``).
    """
    pl = require_polars()
    return pl.from_arrow(table, rechunk=False)
