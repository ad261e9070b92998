"""Shared fixtures: a clean environment, a fresh vault on tmp_path, small sample sources."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import wrdsvault
from _helpers.proc import strip_env
from wrdsvault.sources import SampleSource

# pytest-in-pytest for the plugin's tests (tests/plugin). Here because pytest refuses
# pytest_plugins in a conftest below the top level; pytester only adds fixtures.
pytest_plugins = ["pytester"]

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

#: Small but realistic: enough permnos for the research queries to return rows, fast to build.
SMALL: dict[str, Any] = {"seed": 0, "years": range(2019, 2024), "n_securities": 60}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strip WRDSVAULT_* and PG* variables so the developer's shell cannot change a test."""
    strip_env(monkeypatch)


@pytest.fixture
def years() -> range:
    """The years the small sample sources serve."""
    return SMALL["years"]


@pytest.fixture
def make_source() -> Callable[..., SampleSource]:
    """Build a small sample source of a given vintage (same seed and size as `sample_source`)."""

    def make(vintage: int = 1) -> SampleSource:
        return SampleSource(**SMALL, vintage=vintage)

    return make


@pytest.fixture
def sample_source(make_source: Callable[..., SampleSource]) -> SampleSource:
    """A small vintage-1 sample source."""
    return make_source(1)


@pytest.fixture
def vault(tmp_path: Path, sample_source: SampleSource) -> Iterator[wrdsvault.Warehouse]:
    """A fresh, empty vault (created, never synced) on tmp_path with the small sample source."""
    wh = wrdsvault.Warehouse(tmp_path / "vault", source=sample_source, create=True)
    yield wh
    wh.close()
