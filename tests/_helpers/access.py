"""Processes without write access to a vault: a group member, and a read-only mount.

Each function returns an argv prefix that runs a command that way, or skips the test with the
reason where this machine cannot provide it (both need root: one to hand the vault to another
user, the other for a private mount namespace).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

#: Run a command as an ordinary user with our uid: no capabilities now, and none after exec.
DROP = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"]
#: The user the vault is handed to.
NOBODY = 65534


def give_away(root: Path) -> None:
    """Hand the vault to ``nobody``, group 0: we keep only the group's read access."""
    for dirpath, _dirs, files in os.walk(root):
        os.chown(dirpath, NOBODY, 0)
        for name in files:
            os.chown(os.path.join(dirpath, name), NOBODY, 0, follow_symlinks=False)


def group_member(root: Path) -> list[str]:
    """Give the vault at ``root`` away and return the prefix (`DROP`) of a group member who may
    read it but not write it (checked: creating a file in it must fail)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to give the vault to another user) and setpriv(1)")
    give_away(root)
    probe = subprocess.run(
        [*DROP, "touch", str(root / "probe")], capture_output=True, text=True, check=False
    )
    if probe.returncode == 0 or "Permission denied" not in probe.stderr:
        pytest.skip(f"dropping capabilities did not take write access away: {probe.stderr[-300:]}")
    return DROP


def read_only_mount(root: Path) -> list[str]:
    """An argv prefix that runs a command with ``root`` mounted read-only (only it sees that)."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare(1) and mount(8)")
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(root)]
    probe = subprocess.run(
        [*prefix, "touch", str(root / "probe")], capture_output=True, text=True, check=False
    )
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"cannot make a read-only bind mount here: {probe.stderr.strip()[-300:]}")
    return prefix
