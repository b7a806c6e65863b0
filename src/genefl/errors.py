"""Errors that genefl reports to a user as one clear message (no traceback)."""

from __future__ import annotations


class GeneflError(Exception):
    """A problem the user can fix: the message names it and says how."""


class ConfigError(GeneflError, ValueError):
    """An invalid configuration value (CLI option or config file entry)."""


class DataError(GeneflError):
    """A data set file is missing, truncated or in the wrong format."""
