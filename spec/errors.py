"""The one exception hierarchy of clipcore.

Every bad input (a file, a shape, an image, a text, a URL, a hash, a config) raises a subclass of
`ClipcoreError`. Each error carries the problem and, where there is one, the fix, so that the message a
user sees says both. The classes also derive from the built-in exception a caller would naturally catch
(`ValueError`, `OSError`, `LookupError`, ...), so existing `except ValueError` code keeps working.

This module lives in `spec` because `spec` is the bottom layer; `clipcore.errors` re-exports it.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "CheckpointError",
    "ChecksumError",
    "ClipcoreError",
    "ConfigError",
    "DataError",
    "DownloadError",
    "ImageError",
    "OfflineError",
    "ShapeError",
    "TextError",
    "UnknownModelError",
    "UnsafeCheckpointError",
    "UnsupportedModelError",
]


class ClipcoreError(Exception):
    """Base class: `problem` says what is wrong, `fix` (optional) what to do about it."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        super().__init__(problem, fix)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return self.problem if not self.fix else f"{self.problem}\n  fix: {self.fix}"


class ConfigError(ClipcoreError, ValueError):
    """A hyperparameter or a JSON model config is impossible or malformed."""


class UnknownModelError(ClipcoreError, LookupError):
    """A model or checkpoint name is not in any registry."""


class UnsupportedModelError(ClipcoreError, ValueError):
    """A valid model that clipcore does not build (e.g. CoCa), or whose optional extra is missing."""


class ShapeError(ClipcoreError, ValueError):
    """A mapping of tensor shapes does not describe a CLIP model: missing keys, contradictions, odd layouts."""


class CheckpointError(ClipcoreError, ValueError):
    """A checkpoint file cannot be read: wrong format, truncated, corrupt, out-of-range storages."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint asks to run code (a pickle global that is not a tensor rebuild); refused before anything runs."""


class ImageError(ClipcoreError, ValueError):
    """An image cannot be decoded or preprocessed."""


class TextError(ClipcoreError, ValueError):
    """A text cannot be tokenized as asked (e.g. too long for the context without truncation)."""


class DataError(ClipcoreError, ValueError):
    """A dataset row or file (captions file, image folder) is malformed."""


class DownloadError(ClipcoreError, OSError):
    """A checkpoint could not be fetched: HTTP errors, timeouts, bad URLs."""


class ChecksumError(DownloadError):
    """A downloaded or cached file does not have the expected SHA-256."""


class OfflineError(DownloadError):
    """Offline mode is on and the file is not in the cache."""


class BackendError(ClipcoreError, RuntimeError):
    """A backend name is unknown, cannot run here, or refuses an input (e.g. an untrusted TorchScript archive)."""
