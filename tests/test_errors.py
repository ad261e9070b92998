"""Bad values get documented errors: settings, sync and query arguments, the lock, the signature."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import wrdsvault
from _helpers.disk import entry_paths
from wrdsvault.sources import SampleSource


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("compression", 3),
        ("compression", "brotli"),
        ("drift_policy", "lenient"),
        ("disk_warn_fraction", 1.5),
        ("disk_refuse_fraction", 0),
        ("max_removed_fraction", -0.1),
        ("lock_timeout_s", -1),
        ("lock_stale_after_s", 0),
        ("lock_heartbeat_s", math.nan),
        ("row_group_rows", 0),
        ("batch_rows", -5),
        ("query_threads", 0),
        ("query_memory_limit", "lots"),
        ("query_timeout_s", -1),
    ],
)
def test_settings_out_of_range_raise_invalid_value_error(field: str, value: object) -> None:
    """A VaultSettings value outside its range is an InvalidValueError naming field and value."""
    with pytest.raises(wrdsvault.InvalidValueError) as err:
        wrdsvault.VaultSettings(**{field: value})
    assert isinstance(err.value, ValueError)
    assert err.value.name == field
    assert err.value.value is value or err.value.value == value
    assert field in str(err.value) and err.value.rule in str(err.value)


def test_a_drift_policy_per_dataset_is_checked_too() -> None:
    """drift_policies={dataset: policy} refuses an unknown policy with InvalidValueError."""
    with pytest.raises(wrdsvault.InvalidValueError, match=r"crsp\.msf") as err:
        wrdsvault.VaultSettings(drift_policies={"crsp.msf": "lenient"})
    assert err.value.value == "lenient" and "additive" in err.value.rule


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("group_access", "no"),
        ("group_access", 1),
        ("lock_timeout_s", "30"),
        ("disk_warn_fraction", True),
        ("row_group_rows", 1.5),
        ("batch_rows", "100"),
    ],
)
def test_settings_of_the_wrong_type_are_type_errors(field: str, value: object) -> None:
    """A value of the wrong type is a TypeError naming the field, never silently converted."""
    with pytest.raises(TypeError, match=field):
        wrdsvault.VaultSettings(**{field: value})


def test_a_bad_environment_variable_names_the_variable() -> None:
    """WRDSVAULT_* values that are unreadable or out of range raise InvalidValueError."""
    for variable, raw in [
        ("WRDSVAULT_COMPRESSION", "brotli"),
        ("WRDSVAULT_LOCK_TIMEOUT_S", "soon"),
        ("WRDSVAULT_BATCH_ROWS", "0"),
        ("WRDSVAULT_DISK_WARN_FRACTION", "80%"),
    ]:
        with pytest.raises(wrdsvault.InvalidValueError, match=variable) as err:
            wrdsvault.VaultSettings().with_env({variable: raw})
        assert (err.value.name, err.value.value) == (variable, raw)
    settings = wrdsvault.VaultSettings().with_env(
        {"WRDSVAULT_BATCH_ROWS": "1000", "WRDSVAULT_DISK_WARN_FRACTION": "0.5"}
    )
    assert (settings.batch_rows, settings.disk_warn_fraction) == (1000, 0.5)


@pytest.fixture
def wh(tmp_path: Path) -> wrdsvault.Warehouse:
    source = SampleSource(seed=0, years=range(2020, 2022), n_securities=10)
    return wrdsvault.Warehouse(tmp_path / "v", source=source)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"wait": -1}, wrdsvault.InvalidValueError),
        ({"wait": math.nan}, wrdsvault.InvalidValueError),
        ({"wait": "5"}, TypeError),
        ({"drift": "lenient"}, wrdsvault.InvalidValueError),
        ({"drift": {"ff.factors_monthly": "lenient"}}, wrdsvault.InvalidValueError),
        ({"years": [0]}, wrdsvault.InvalidValueError),
        ({"years": []}, wrdsvault.InvalidValueError),
    ],
)
def test_sync_arguments_out_of_range_write_nothing(
    wh: wrdsvault.Warehouse, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    """sync() with wait/drift/years out of range raises the documented error; nothing is written
    (a first sync does not even create the vault)."""
    with pytest.raises(error):
        wh.sync("ff.factors_monthly", **kwargs)
    assert not wh.root.exists()
    wh.sync("ff.factors_monthly")
    before = entry_paths(wh.root)
    with pytest.raises(error):
        wh.sync("ff.factors_monthly", **kwargs)
    assert entry_paths(wh.root) == before


def test_warehouse_lock_timeout_out_of_range(tmp_path: Path) -> None:
    """Warehouse(lock_timeout_s=-1) is an InvalidValueError, like the setting it overrides."""
    with pytest.raises(wrdsvault.InvalidValueError, match="lock_timeout_s"):
        wrdsvault.Warehouse(tmp_path / "v", lock_timeout_s=-1)


@pytest.mark.parametrize("params", [5, "ab", b"ab", {1, 2}])
def test_query_params_of_the_wrong_type_are_type_errors(
    wh: wrdsvault.Warehouse, params: object
) -> None:
    """params= must be a list/tuple, a dict or None: anything else is a TypeError saying so."""
    wh.sync("ff.factors_monthly")
    calls: list[Callable[[], object]] = [
        lambda: wh.query("select 1", params),  # type: ignore[arg-type]
        lambda: wh.arrow("select 1", params),  # type: ignore[arg-type]
        lambda: wh.snapshot().sql("select 1", params),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(TypeError, match="params must be a list or tuple"):
            call()
    assert wh.query("select $1 as x", (7,))["x"][0] == 7
    assert wh.query("select $x as x", {"x": 8})["x"][0] == 8


def test_signatures_have_no_test_hooks_and_readable_defaults() -> None:
    """help(Warehouse) shows no disk_usage hook and no ``<object object at ...>`` default."""
    init = inspect.signature(wrdsvault.Warehouse)
    assert "disk_usage" not in init.parameters
    for cls in (wrdsvault.Warehouse, wrdsvault.Snapshot):
        for name, member in vars(cls).items():
            if name.startswith("_") or not inspect.isfunction(member):
                continue
            for param in inspect.signature(member).parameters.values():
                assert " at 0x" not in repr(param.default), f"{cls.__name__}.{name}({param})"
    default = inspect.signature(wrdsvault.Warehouse.sync).parameters["date_column"].default
    assert repr(default) == "<the dataset's built-in spec>"
