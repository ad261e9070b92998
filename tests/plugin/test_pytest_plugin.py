"""The ``pytest11`` plugin: @pytest.mark.wrdsvault pins a test's data; never other data.

Each test writes a small test file, runs pytest on it with ``pytester`` (the plugin is loaded
through its entry point, as for a user), and reads the outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import wrdsvault
from wrdsvault.sources import SampleSource

SMALL = {"seed": 0, "years": range(2020, 2023), "n_securities": 30}

PINNED = """
import pytest

@pytest.mark.wrdsvault({args})
def test_uses_data(wrds_snapshot):
    n = wrds_snapshot.query("select count(*) as n from crsp.msf")["n"][0]
    print("PINNED", wrds_snapshot.id, n)
"""


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[wrdsvault.Warehouse]:
    """A vault holding crsp.msf of vintage 1, tagged paper-v1, then vintage 2 as latest."""
    wh = wrdsvault.Warehouse(tmp_path / "vault", source=SampleSource(**SMALL))
    wh.sync("crsp.msf")
    wh.tag("paper-v1")
    wh.source = SampleSource(**SMALL, vintage=2)
    wh.sync("crsp.msf")
    yield wh
    wh.close()


def _pinned_line(result: pytest.RunResult) -> list[str]:
    """What the test body printed: ``PINNED <snapshot id> <rows>`` (empty if it never ran)."""
    return [line[line.index("PINNED") :] for line in result.outlines if "PINNED" in line]


def test_snapshot_pin_gives_that_snapshot(
    pytester: pytest.Pytester, vault: wrdsvault.Warehouse
) -> None:
    """snapshot="paper-v1": the fixture is that snapshot, not latest."""
    pytester.makepyfile(PINNED.format(args='snapshot="paper-v1"'))
    result = pytester.runpytest("-s", "--wrdsvault-vault", str(vault.root))
    result.assert_outcomes(passed=1)
    paper = vault.snapshot("paper-v1")
    assert _pinned_line(result)[0].split()[1] == paper.id != vault.snapshot().id


def test_the_vault_can_come_from_the_environment(
    pytester: pytest.Pytester, vault: wrdsvault.Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WRDSVAULT_VAULT names the vault when --wrdsvault-vault is not given."""
    monkeypatch.setenv("WRDSVAULT_VAULT", str(vault.root))
    pytester.makepyfile(PINNED.format(args='"paper-v1"'))
    pytester.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize("mode", ["skip", "fail"])
def test_no_vault_skips_or_fails_with_the_reason(pytester: pytest.Pytester, mode: str) -> None:
    """Without a vault: skipped (default) or failed (--wrdsvault-missing=fail), saying why."""
    pytester.makepyfile(PINNED.format(args='snapshot="paper-v1"'))
    result = pytester.runpytest("-rs", f"--wrdsvault-missing={mode}")
    if mode == "skip":
        result.assert_outcomes(skipped=1)
    else:
        result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*wrdsvault: no vault: pass --wrdsvault-vault PATH*"])


@pytest.mark.parametrize("mode", ["skip", "fail"])
def test_a_missing_snapshot_skips_or_fails_never_uses_latest(
    pytester: pytest.Pytester, vault: wrdsvault.Warehouse, mode: str
) -> None:
    """A tag the vault lacks: skip or fail naming it; the test body never runs on other data."""
    pytester.makepyfile(PINNED.format(args='snapshot="paper-v9"'))
    result = pytester.runpytest(
        "-rs", "-s", "--wrdsvault-vault", str(vault.root), f"--wrdsvault-missing={mode}"
    )
    if mode == "skip":
        result.assert_outcomes(skipped=1)
    else:
        result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*snapshot 'paper-v9' not in vault*"])
    assert _pinned_line(result) == []


def test_a_matching_receipt_pins_its_snapshot(
    pytester: pytest.Pytester, vault: wrdsvault.Warehouse
) -> None:
    """receipt=: the receipt's snapshot is given when the vault has it (path beside the test)."""
    paper = vault.snapshot("paper-v1")
    paper.receipt().save(pytester.path / "data-receipt.json")
    pytester.makepyfile(PINNED.format(args='receipt="data-receipt.json"'))
    result = pytester.runpytest("-s", "--wrdsvault-vault", str(vault.root))
    result.assert_outcomes(passed=1)
    assert _pinned_line(result)[0].split()[1] == paper.id


def test_a_receipt_from_another_machine_finds_the_snapshot_by_content(
    pytester: pytest.Pytester, vault: wrdsvault.Warehouse, tmp_path: Path
) -> None:
    """A receipt made on another vault (other encoding): the snapshot with equal rows is used."""
    other = wrdsvault.Warehouse(
        tmp_path / "other",
        source=SampleSource(**SMALL),
        settings=wrdsvault.VaultSettings(row_group_rows=64),
    )
    other.sync("crsp.msf")
    other.snapshot().receipt().save(pytester.path / "r.json")
    pytester.makepyfile(PINNED.format(args='receipt="r.json"'))
    result = pytester.runpytest("-s", "--wrdsvault-vault", str(vault.root))
    result.assert_outcomes(passed=1)
    assert _pinned_line(result)[0].split()[1] == vault.snapshot("paper-v1").id


def test_a_receipt_mismatch_fails_naming_the_dataset(
    pytester: pytest.Pytester, vault: wrdsvault.Warehouse
) -> None:
    """snapshot="latest" with a receipt of paper-v1: crsp.msf differs, the test fails."""
    vault.snapshot("paper-v1").receipt().save(pytester.path / "r.json")
    pytester.makepyfile(PINNED.format(args='snapshot="latest", receipt="r.json"'))
    result = pytester.runpytest("-s", "--wrdsvault-vault", str(vault.root))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*does not match receipt r.json (crsp.msf)*"])
    assert _pinned_line(result) == []


def test_a_receipt_no_snapshot_matches_fails_even_in_skip_mode(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """A vault with only other rows: the receipt fails (a mismatch is not a missing vault)."""
    a = wrdsvault.Warehouse(tmp_path / "a", source=SampleSource(**SMALL))
    a.sync("crsp.msf")
    a.snapshot().receipt().save(pytester.path / "r.json")
    b = wrdsvault.Warehouse(tmp_path / "b", source=SampleSource(**SMALL, vintage=2))
    b.sync("crsp.msf")
    pytester.makepyfile(PINNED.format(args='receipt="r.json"'))
    result = pytester.runpytest("--wrdsvault-vault", str(b.root))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*crsp.msf: DIFFERS*"])


def test_the_marker_without_the_fixture_still_checks_the_pin(
    pytester: pytest.Pytester, vault: wrdsvault.Warehouse
) -> None:
    """A marked test that opens the data itself is still skipped when its snapshot is absent."""
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.wrdsvault(snapshot="paper-v1")
        def test_present():
            pass

        @pytest.mark.wrdsvault(snapshot="gone")
        def test_absent():
            raise AssertionError("must not run")
        """
    )
    result = pytester.runpytest("-rs", "--wrdsvault-vault", str(vault.root))
    result.assert_outcomes(passed=1, skipped=1)


def test_the_fixture_without_a_marker_fails_rather_than_guess(
    pytester: pytest.Pytester, vault: wrdsvault.Warehouse
) -> None:
    """wrds_snapshot in an unmarked test is an error: the plugin never picks a snapshot."""
    pytester.makepyfile("def test_x(wrds_snapshot):\n    pass\n")
    result = pytester.runpytest("--wrdsvault-vault", str(vault.root))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*wrds_snapshot needs the test pinned*"])


def test_the_plugin_is_inert_and_imports_nothing_when_unused(pytester: pytest.Pytester) -> None:
    """A run without the marker passes and never imports wrdsvault (loaded via pytest11)."""
    pytester.makepyfile(
        """
        import sys

        def test_plain(pytestconfig):
            assert pytestconfig.pluginmanager.has_plugin("wrdsvault")
            assert "wrdsvault" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
