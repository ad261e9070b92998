"""``python -m wrdsvault`` runs the CLI."""

from __future__ import annotations

import sys

from wrdsvault.cli import main

sys.exit(main())
