"""The package's version, at the bottom of the import order so manifests and runs can record it."""

__version__ = "0.1.0"
