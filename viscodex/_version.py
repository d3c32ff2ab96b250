"""The package version, in a module of its own so that any layer can read it without importing
the package's public API (pyproject reads it too: `[tool.setuptools.dynamic]`)."""
__version__ = "0.1.0"
