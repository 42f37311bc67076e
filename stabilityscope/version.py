"""The package's version, written here once: ``stabilityscope.__version__``, ``python -m stabilityscope --version``
and the built distribution (``pyproject.toml`` reads it from this file) all take it from here."""

__version__ = "0.1.0"
