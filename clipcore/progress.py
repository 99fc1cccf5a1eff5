"""A download progress bar on stderr: tqdm when it is installed, otherwise a small built-in one.

Both show size, rate and ETA. Nothing is drawn unless asked for and stderr is a terminal, so logs, CI output
and piped runs stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["NullBar", "TextBar", "progress_bar"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def _human(n: float) -> str:
    for unit in _UNITS:
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class NullBar:
    """The bar used when progress is off: accepts updates, draws nothing."""

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TextBar(NullBar):
    """`name  45.2 MiB/338.0 MiB  12.3 MiB/s  ETA 00:23`, redrawn in place at most ten times a second."""

    def __init__(self, total: int | None, initial: int = 0, desc: str = "", stream: TextIO | None = None):
        self.total, self.done, self.desc = total, initial, desc
        self.stream = stream if stream is not None else sys.stderr
        # The rate counts only this session's bytes: a resumed download must not look infinitely fast.
        self._start, self._start_done, self._drawn = time.monotonic(), initial, 0.0
        self._closed = False

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._drawn >= 0.1:
            self._draw(now)

    def _draw(self, now: float) -> None:
        self._drawn = now
        rate = (self.done - self._start_done) / max(now - self._start, 1e-9)
        size = _human(self.done) if self.total is None else f"{_human(self.done)}/{_human(self.total)}"
        parts = [self.desc, size, f"{_human(rate)}/s"]
        if self.total is not None and self.total > 0:
            parts.insert(1, f"{100 * self.done / self.total:3.0f}%")
            eta = (self.total - self.done) / rate if rate > 0 else None
            parts.append("ETA " + (_clock(eta) if eta is not None else "--:--"))
        self.stream.write("\r" + "  ".join(p for p in parts if p) + "\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


class _TqdmBar(NullBar):
    def __init__(self, total: int | None, initial: int, desc: str):
        from tqdm import tqdm

        self._bar = tqdm(
            total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
            file=sys.stderr, dynamic_ncols=True, leave=True,
        )

    def update(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


def progress_bar(total: int | None, initial: int = 0, desc: str = "", enabled: bool = True) -> NullBar:
    """A bar for `total` bytes (None if unknown), starting at `initial`; silent unless `enabled` and stderr is
    a terminal."""
    isatty = getattr(sys.stderr, "isatty", None)
    if not enabled or isatty is None or not isatty():
        return NullBar()
    try:
        return _TqdmBar(total, initial, desc)
    except ImportError:
        return TextBar(total, initial, desc)
