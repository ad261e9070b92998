"""The sync's pandas-free NumPy views of Arrow arrays, and its choice of Arrow allocator.

`wrdsvault._arrays` reads Arrow buffers directly (``to_numpy`` would import pandas); each helper
is checked against ``to_numpy``/``to_pylist`` on arrays with nulls and non-zero offsets, where
reading buffers by hand goes wrong first. `prefer_jemalloc` is checked in fresh interpreters:
it may only act before pyarrow is loaded, and never over a value the user set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pytest

from wrdsvault._arrays import bools, from_numpy, valid, values
from wrdsvault._digest import table_digest
from wrdsvault._memory import JEMALLOC_DEFAULTS
from wrdsvault.sources.wrds import _exact_sum

CASES = [
    (pa.array([1, None, 3, 4, None, 6, 7, 8, 9, 10, None], pa.int64()), "<i8"),
    (pa.array([1.5, -0.0, None, float("nan"), 2.5] * 5, pa.float64()), "<f8"),
    (pa.array([10, 20, None, 40] * 7, pa.int32()), "<i4"),
    (pa.array(list(range(40)), pa.int64()), "<i8"),
]


@pytest.mark.parametrize(("arr", "dtype"), CASES)
@pytest.mark.parametrize(("start", "stop"), [(0, None), (1, None), (3, 9), (9, 10), (2, 2)])
def test_values_and_validity_match_arrow_at_every_offset(
    arr: pa.Array, dtype: str, start: int, stop: int | None
) -> None:
    part = arr.slice(start, None if stop is None else stop - start)
    got_valid = valid(part)
    assert got_valid.tolist() == [v is not None for v in part.to_pylist()]
    got = values(part, dtype)
    assert got.dtype == np.dtype(dtype)
    assert len(got) == len(part)
    expected = part.to_pylist()
    for have, want in zip(got.tolist(), expected, strict=True):
        if want is not None and want == want:  # NaN compares unequal; skip nulls' slots
            assert have == want


@pytest.mark.parametrize(("start", "stop"), [(0, None), (5, None), (3, 17), (8, 16)])
def test_bools_and_validity_of_a_boolean_array(start: int, stop: int | None) -> None:
    raw = [True, False, None, True, True, None, False, True, False, False] * 2
    part = pa.array(raw, pa.bool_()).slice(start, None if stop is None else stop - start)
    assert valid(part).tolist() == [v is not None for v in part.to_pylist()]
    got = bools(part)
    assert [g for g, v in zip(got.tolist(), part.to_pylist(), strict=True) if v is not None] == [
        v for v in part.to_pylist() if v is not None
    ]


def test_from_numpy_builds_the_same_array_as_pyarrow() -> None:
    data = np.array([1.0, 2.0, 3.0, 4.0])
    mask = np.array([False, True, False, True])
    assert from_numpy(data, pa.float64(), mask).equals(pa.array(data, pa.float64(), mask=mask))
    assert from_numpy(data, pa.float64()).null_count == 0
    assert from_numpy(data, pa.float64(), np.zeros(4, dtype=bool)).equals(pa.array(data))


def test_exact_sum_is_exact_beyond_int64_and_refuses_a_null() -> None:
    big = [2**63 - 1] * 3 + [-(2**63)] * 5 + [12345]
    arr = pa.array(big, pa.int64())
    assert _exact_sum(arr.slice(2)) == sum(big[2:])
    assert _exact_sum(pa.chunked_array([arr.slice(0, 4), arr.slice(4)])) == sum(big)
    with pytest.raises(ValueError, match="NULL"):
        _exact_sum(pa.array([1, None], pa.int64()))


def test_digest_of_sliced_batches_with_nulls_is_the_digest_of_the_whole() -> None:
    """The digest reads validity and values through `_arrays`; batches cut at odd offsets
    (where a bitmap does not start on a byte) must hash as the whole table does."""
    n = 1_000
    table = pa.table(
        {
            "k": pa.array(range(n), pa.int64()),
            "f": pa.array([None if i % 7 == 0 else i / 3 for i in range(n)], pa.float64()),
            "b": pa.array([None if i % 5 == 0 else i % 2 == 0 for i in range(n)], pa.bool_()),
            "i": pa.array([None if i % 3 == 0 else i for i in range(n)], pa.int32()),
        }
    )
    whole = table_digest(table, ["k"])
    from wrdsvault._digest import Digester

    digester = Digester(table.schema, ["k"])
    for start, stop in [(0, 3), (3, 11), (11, 500), (500, 501), (501, n)]:
        digester.update(table.slice(start, stop - start))
    assert digester.in_order
    assert digester.hexdigest() == whole
    changed = table.set_column(1, "f", pa.array([None] * n, pa.float64()))
    assert table_digest(changed, ["k"]) != whole


def _fresh(code: str, env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def _env_without_allocator_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in JEMALLOC_DEFAULTS}


@pytest.mark.skipif(sys.platform != "linux", reason="jemalloc is preferred on Linux only")
def test_importing_a_source_first_makes_jemalloc_arrows_default_pool() -> None:
    out = _fresh(
        """
        import json, os
        import wrdsvault.sources
        import pyarrow as pa
        print(pa.default_memory_pool().backend_name)
        print(json.dumps({k: os.environ.get(k) for k in
                          ("ARROW_DEFAULT_MEMORY_POOL", "JE_ARROW_MALLOC_CONF")}))
        """,
        _env_without_allocator_settings(),
    )
    assert out[0] == "jemalloc"
    assert json.loads(out[1]) == JEMALLOC_DEFAULTS


def test_a_process_that_loaded_pyarrow_first_keeps_its_allocator() -> None:
    out = _fresh(
        """
        import os
        import pyarrow as pa
        before = pa.default_memory_pool().backend_name
        from wrdsvault._memory import prefer_jemalloc
        import wrdsvault.sources
        print(prefer_jemalloc(), pa.default_memory_pool().backend_name == before,
              os.environ.get("ARROW_DEFAULT_MEMORY_POOL"))
        """,
        _env_without_allocator_settings(),
    )
    assert out == ["False True None"]


@pytest.mark.skipif(sys.platform != "linux", reason="jemalloc is preferred on Linux only")
def test_a_pool_the_user_chose_is_kept() -> None:
    env = {**_env_without_allocator_settings(), "ARROW_DEFAULT_MEMORY_POOL": "system"}
    out = _fresh(
        """
        import os
        import wrdsvault.sources
        import pyarrow as pa
        print(pa.default_memory_pool().backend_name, os.environ["ARROW_DEFAULT_MEMORY_POOL"])
        """,
        env,
    )
    assert out == ["system system"]


def _every_kind_of_column(n: int = 3000) -> pa.Table:
    """Nulls, NaN, -0.0, empty strings, every hashed kind, a dictionary and a list column."""
    import datetime as dt
    import decimal

    def col(f: Any, t: pa.DataType) -> pa.Array:
        return pa.array([f(i) for i in range(n)], t)

    def fl(i: int) -> float | None:
        if i % 5 == 0:
            return None
        if i % 13 == 0:
            return float("nan")
        return -0.0 if i % 17 == 0 else i / 7

    day, utc = dt.date(2000, 1, 1), dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    return pa.table(
        {
            "k": col(lambda i: i, pa.int64()),
            "i32": col(lambda i: None if i % 7 == 0 else i * 3, pa.int32()),
            "u64": col(lambda i: None if i % 11 == 0 else 2**63 + i, pa.uint64()),
            "f": col(fl, pa.float64()),
            "f32": col(lambda i: None if i % 9 == 0 else i / 3, pa.float32()),
            "b": col(lambda i: None if i % 4 == 0 else i % 3 == 0, pa.bool_()),
            "s": col(
                lambda i: None if i % 6 == 0 else ("" if i % 8 == 0 else f"s{i}"), pa.string()
            ),
            "bin": col(lambda i: None if i % 10 == 0 else bytes([i % 256]) * (i % 5), pa.binary()),
            "d": col(lambda i: None if i % 12 == 0 else day + dt.timedelta(days=i), pa.date32()),
            "ts": col(
                lambda i: None if i % 14 == 0 else utc + dt.timedelta(seconds=i),
                pa.timestamp("us", "UTC"),
            ),
            "dec": col(
                lambda i: None if i % 15 == 0 else decimal.Decimal(i) / 1000, pa.decimal128(12, 3)
            ),
            "l": col(lambda i: None if i % 16 == 0 else [i, i + 1], pa.list_(pa.int64())),
            "dict": pa.array(
                [None if i % 3 == 0 else f"c{i % 4}" for i in range(n)]
            ).dictionary_encode(),
        }
    )


#: Content digests (format 1) of `_every_kind_of_column`, by primary key. Computed by the
#: digest as first released; a change here changes every receipt and stored digest.
GOLDEN: Final = {
    ("k",): "b1ef8332a0a7491fc48fef91a5f5066f5fbf4a7dace034a79d409163fc65a644",
    (): "9b65d0449e16a8f63823347e9c63785e40810927ef2c2dd3a9a2e7ccc64beafe",
    ("s",): "f21a6ec77ee1b78d5a3986a742e5d3db4fe439e9ef6272810dd87cb436502a66",
}


@pytest.mark.parametrize("key", list(GOLDEN))
def test_content_digest_is_stable_across_releases(key: tuple[str, ...]) -> None:
    from wrdsvault._digest import Digester

    table = _every_kind_of_column()
    assert table_digest(table, list(key)) == GOLDEN[key]
    reversed_rows = table.take(pa.array(range(table.num_rows - 1, -1, -1)))
    assert table_digest(reversed_rows, list(key)) == GOLDEN[key]
    if key == ("k",):
        streamed = Digester(table.schema, ["k"])
        for start in range(0, table.num_rows, 333):
            streamed.update(table.slice(start, 333))
        assert streamed.in_order
        assert streamed.hexdigest() == GOLDEN[key]
