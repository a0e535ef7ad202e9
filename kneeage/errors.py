"""Typed errors. Every refusal the package raises derives from :class:`KneeageError`.

Messages are one sentence that names the offending file or row and the reason, so a page can show
``str(err)`` as it is.
"""

from __future__ import annotations


class KneeageError(Exception):
    """Base class of every error kneeage raises on purpose."""


class RadiographError(KneeageError):
    """A file could not be turned into a :class:`kneeage.imaging.Radiograph`."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}.")


class ModelError(KneeageError):
    """A model directory is missing, incomplete or inconsistent."""


class InputError(KneeageError):
    """A value given by the user (sex, age, crop box, ...) is unusable."""


class StatsError(KneeageError):
    """Data given to a statistic is unusable (lengths differ, too few pairs, NaN, ...)."""


class StoreError(KneeageError):
    """The study database cannot be opened, reached or used (a bad URL, a server that does not answer, a
    database made by a newer kneeage)."""
