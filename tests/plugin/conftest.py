"""The pytest plugin's tests run pytest inside pytest (``pytester``), against real vaults."""

from __future__ import annotations

pytest_plugins = ["pytester"]
