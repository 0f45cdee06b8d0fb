"""Exceptions that carry the file or config key a user must look at."""

from __future__ import annotations

from pathlib import Path


class ChexdinoError(Exception):
    """Base class: every message names what the user should fix."""


class ImageReadError(ChexdinoError):
    """An image file could not be decoded; ``reason`` goes into the reject table."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ReportReadError(ChexdinoError):
    """A report file is missing or unreadable; ``reason`` goes into the reject table."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ConfigError(ChexdinoError):
    """A config value is wrong; the message names the key."""


class WeightsError(ChexdinoError):
    """A weights file is missing or in the wrong format; the message names key and file."""
