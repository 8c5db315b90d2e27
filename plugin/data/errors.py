"""The error of a missing data path, one class for every reader: the dataset (the paths a
config names) and the reproduction tools (the data folder of a scale)."""

from __future__ import annotations

__all__ = ['MissingDataError']


class MissingDataError(FileNotFoundError):
    """A data path does not exist; the message names it and how to get the data."""
