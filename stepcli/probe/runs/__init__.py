"""Run directories on disk and the compatibility checks between a run and a cache."""
