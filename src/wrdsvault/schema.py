"""Schema drift: how a dataset's columns changed between the last commit and the source now.

WRDS retypes columns over time (``permno`` went from ``double precision`` to ``integer``, prices
to ``numeric(11,5)``), adds and drops columns. A sync compares the source's schema with the one
last committed and classifies every difference; the drift policy decides what happens:

* ``"strict"`` (default): any drift refuses the dataset (`SchemaDriftError`), the staged files go
  to quarantine and the previous snapshot stays current;
* ``"additive"``: added columns are accepted, anything else is refused;
* ``"accept"``: every drift is recorded and accepted.

Readers of older snapshots keep their old schema: their files never change. The history of a
dataset's schema is derived from the committed manifests (`Warehouse.schema_history`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from wrdsvault.manifest import ColumnSchema

if TYPE_CHECKING:  # pyarrow is imported by the functions that build Arrow types, when called
    import pyarrow as pa

__all__ = [
    "DRIFT_POLICIES",
    "ColumnChange",
    "DriftPolicy",
    "SchemaDrift",
    "SchemaVersion",
    "arrow_schema",
    "diff",
]

DriftPolicy = Literal["strict", "additive", "accept"]
DRIFT_POLICIES: Final = ("strict", "additive", "accept")

_INT_WIDTH: Final = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}
_DECIMAL_RE: Final = re.compile(r"^decimal(?:128|256)\((\d+), (\d+)\)$")
_VARCHAR_RE: Final = re.compile(r"^(?:character varying|varchar|char|character)\((\d+)\)$")
_TIMESTAMP_TZ_RE: Final = re.compile(r"^timestamp\[(s|ms|us|ns), tz=(.+)\]$")


@attrs.frozen(kw_only=True)
class ColumnChange:
    """One column whose type changed. ``kind`` is ``widened``, ``narrowed`` or ``retyped``."""

    column: str
    old: ColumnSchema
    new: ColumnSchema
    kind: str

    def describe(self) -> str:
        old = self.old.source_type or self.old.type
        new = self.new.source_type or self.new.type
        return f"{self.column}: {old} -> {new} ({self.kind})"


def _kind(old: ColumnSchema, new: ColumnSchema) -> str:
    """Classify a type change as widened (no value can be lost), narrowed, or retyped."""
    if old.type == new.type:  # only the declared source type differs, e.g. varchar(8) -> (10)
        o = _VARCHAR_RE.match(old.source_type or "")
        n = _VARCHAR_RE.match(new.source_type or "")
        if o and n:
            return "widened" if int(n.group(1)) >= int(o.group(1)) else "narrowed"
        return "retyped"
    if old.type in _INT_WIDTH and new.type in _INT_WIDTH:
        return "widened" if _INT_WIDTH[new.type] > _INT_WIDTH[old.type] else "narrowed"
    od, nd = _DECIMAL_RE.match(old.type), _DECIMAL_RE.match(new.type)
    if od and nd:
        op, os_ = int(od.group(1)), int(od.group(2))
        np_, ns = int(nd.group(1)), int(nd.group(2))
        return "widened" if ns >= os_ and np_ - ns >= op - os_ else "narrowed"
    if old.type in _INT_WIDTH and new.type == "double":
        return "widened" if _INT_WIDTH[old.type] <= 32 else "retyped"
    if old.type == "float" and new.type == "double":
        return "widened"
    if old.type == "double" and (new.type in _INT_WIDTH or nd):
        return "narrowed"
    return "retyped"


@attrs.frozen(kw_only=True)
class SchemaDrift:
    """Every difference between two column lists."""

    dataset: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[ColumnChange, ...] = ()
    reordered: bool = False
    nullability: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.added or self.removed or self.changed or self.reordered or self.nullability
        )

    @property
    def kinds(self) -> tuple[str, ...]:
        """The drift classes present: added, removed, widened, narrowed, retyped, reordered."""
        out = []
        if self.added:
            out.append("added")
        if self.removed:
            out.append("removed")
        out.extend(sorted({c.kind for c in self.changed}))
        if self.reordered:
            out.append("reordered")
        if self.nullability:
            out.append("nullability")
        return tuple(out)

    def allowed_by(self, policy: DriftPolicy) -> bool:
        """Whether ``policy`` accepts this drift."""
        if self.empty or policy == "accept":
            return True
        if policy == "additive":
            return not (self.removed or self.changed or self.reordered or self.nullability)
        return False

    def summary(self) -> str:
        parts = []
        if self.added:
            parts.append(f"added {', '.join(self.added)}")
        if self.removed:
            parts.append(f"removed {', '.join(self.removed)}")
        parts.extend(c.describe() for c in self.changed)
        if self.reordered:
            parts.append("columns reordered")
        if self.nullability:
            parts.append(f"nullability changed for {', '.join(self.nullability)}")
        return "; ".join(parts) if parts else "no drift"

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "kinds": list(self.kinds),
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": [
                {"column": c.column, "kind": c.kind, "old": c.old.to_json(), "new": c.new.to_json()}
                for c in self.changed
            ],
            "reordered": self.reordered,
            "nullability": list(self.nullability),
            "summary": self.summary(),
        }


def diff(dataset: str, old: Sequence[ColumnSchema], new: Sequence[ColumnSchema]) -> SchemaDrift:
    """Classify every difference from ``old`` to ``new``. ``diff(x, x)`` is empty."""
    old_by = {c.name: c for c in old}
    new_by = {c.name: c for c in new}
    added = tuple(c.name for c in new if c.name not in old_by)
    removed = tuple(c.name for c in old if c.name not in new_by)
    changed = []
    nullability = []
    for c in new:
        before = old_by.get(c.name)
        if before is None:
            continue
        if (before.type, before.source_type) != (c.type, c.source_type):
            changed.append(ColumnChange(column=c.name, old=before, new=c, kind=_kind(before, c)))
        if before.nullable != c.nullable:
            nullability.append(c.name)
    common_old = [c.name for c in old if c.name in new_by]
    common_new = [c.name for c in new if c.name in old_by]
    return SchemaDrift(
        dataset=dataset,
        added=added,
        removed=removed,
        changed=tuple(changed),
        reordered=common_old != common_new,
        nullability=tuple(nullability),
    )


@attrs.frozen(kw_only=True)
class SchemaVersion:
    """One schema of a dataset and the snapshot that introduced it."""

    snapshot_id: str
    committed_at: datetime
    columns: tuple[ColumnSchema, ...]
    drift: SchemaDrift | None  # None for the first version

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "committed_at": self.committed_at.isoformat(),
            "columns": [c.to_json() for c in self.columns],
            "drift": self.drift.to_json() if self.drift else None,
        }


def _arrow_type(text: str) -> pa.DataType:
    """The Arrow type whose ``str()`` is ``text`` (a manifest's column type); null if unknown."""
    import pyarrow as pa

    if m := _DECIMAL_RE.match(text):
        precision, scale = int(m.group(1)), int(m.group(2))
        make = pa.decimal128 if text.startswith("decimal128") else pa.decimal256
        return make(precision, scale)
    if m := _TIMESTAMP_TZ_RE.match(text):
        unit: Any = m.group(1)  # one of s, ms, us, ns (the pattern says so)
        return pa.timestamp(unit, tz=m.group(2))
    alias: Any = text  # type_for_alias is typed for literal aliases only
    try:
        found: pa.DataType = pa.type_for_alias(alias)
        return found
    except (ValueError, KeyError):
        return pa.null()  # nested and other rare types: the column keeps its name, not its type


def arrow_schema(columns: Sequence[ColumnSchema]) -> pa.Schema:
    """The Arrow schema a manifest's column list describes (to type a dataset with no files)."""
    import pyarrow as pa

    return pa.schema([pa.field(c.name, _arrow_type(c.type), c.nullable) for c in columns])
