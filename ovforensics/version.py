"""The package version, in one place (the API, the CLI and the run record read it)."""

__version__ = "0.1.0"
