"""Code the tests share: the one place for helpers used by more than one test file.

How it is importable: ``pythonpath = ["tests"]`` in pytest's settings (``pyproject.toml``) puts
``tests/`` on ``sys.path``, so test modules and conftest files write ``from _helpers import
disk`` whatever pytest's import mode. A child script run by path that needs them (``tests/crash``,
``tests/reliability``) adds ``tests/`` to ``sys.path`` itself, in one line at its top, and imports
the same modules.

Nothing here is collected (no ``test_*`` files). What the children import (``disk``, ``proc``,
``sources``, ``reliability``) needs only the standard library and wrdsvault, so a child pays
nothing extra for it; the rest may import pytest and Hypothesis.

* `disk`: what is on disk under a folder (digests, paths, stats), the vault's HEAD, manifests
  and leftovers, copies of vaults, rewriting a vault as format 1 wrote it;
* `proc`: the environment of a test and of its children, waiting on a condition with a deadline;
* `sources`: sample sources from JSON arguments, the base of sources that wrap another;
* `children`: child processes that talk in JSON lines (the lock and reader-lease children);
* `locks`: stale lock files built on disk, a process that dies holding the lock, holder logs;
* `leases`: the snapshot ids live reader leases hold;
* `records`: commit records a crash or race leaves (a dead writer's manifest, an expiry alone);
* `access`: processes without write access (a group member, a read-only mount);
* `reliability`: the reliability suite's answers, children, strace fault injection and checks;
* `strategies`: Hypothesis strategies for hostile and valid names;
* `cli`: the command line run in-process, a stream that says it is a terminal.
"""
