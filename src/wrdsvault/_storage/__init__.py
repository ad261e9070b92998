"""Private storage layer: paths, atomic writes, the writer lock, the writer itself, crash points."""
