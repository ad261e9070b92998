"""Code the tests share: the one place for helpers used by more than one test file.

How it is importable: ``pythonpath = ["tests"]`` in pytest's settings (``pyproject.toml``) puts
``tests/`` on ``sys.path``, so test modules and conftest files write ``from _helpers import
disk`` whatever pytest's import mode. A child script run by path (``tests/*/_*_child.py``) adds
``tests/`` to ``sys.path`` itself, in one line at its top, and imports the same modules.

Nothing here is collected (no ``test_*`` files) and nothing imports more than the standard
library, wrdsvault and (``strategies`` only) Hypothesis, so a child pays nothing extra for it.

* `disk`: what is on disk under a folder (digests, paths, stats), the vault's HEAD, manifests
  and leftovers, copies of vaults, rewriting a vault as format 1 wrote it;
* `proc`: the environment of a test and of its children, waiting on a condition with a deadline;
* `sources`: sample sources from JSON arguments, the base of sources that wrap another;
* `locks`: lock-child processes, stale lock files built on disk, enter/exit logs;
* `reliability`: the reliability suite's answers, children, strace fault injection and checks;
* `strategies`: Hypothesis strategies for hostile and valid names;
* `cli`: the command line run in-process, a stream that says it is a terminal.
"""
