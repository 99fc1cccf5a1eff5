"""backends: how a clipcore model runs. A small registry of named factories.

    backends.available()                       # ['eager', 'torchscript'] on a CPU-only machine
    model = backends.get("cuda-fp16").factory(config, checkpoint, "cuda", compile=True)

A backend factory is called as `factory(config, checkpoint, device, **options)`: the config, the opened
checkpoint (never None: every backend reads weights) and the target device. Its keyword-only parameters are
the options it accepts (`trust_archive`, `compile`, ...); `clipcore.load(path, backend=..., **kwargs)` sends
each keyword that is not a config field to the backend, and refuses one the backend does not declare.
Every factory returns a model with the common interface: `encode_image`, `encode_text`,
`forward(image, text) -> (logits_per_image, logits_per_text)`, `config`, `dtype`, `device` (and
`encode_image_uint8` for `Preprocess.batch(..., output="uint8")` input).

A backend that cannot run here (no CUDA, say) says why instead of failing later: `get` raises a
BackendError that lists what is available and why each other backend is not.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clipcore.errors import BackendError

__all__ = ["Backend", "available", "get", "register", "registered"]


@dataclass(frozen=True)
class Backend:
    """A named way to run a model. `unavailable()` returns why it cannot run here, or None."""

    name: str
    factory: Callable[..., Any]
    unavailable: Callable[[], str | None] = lambda: None
    description: str = ""

    @property
    def options(self) -> tuple[str, ...]:
        """The options this backend accepts: its factory's keyword-only parameters."""
        parameters = inspect.signature(self.factory).parameters.values()
        return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


_REGISTRY: dict[str, Backend] = {}
# Built-in backends are imported on first use, so `import backends` stays cheap.
_BUILTIN_MODULES = ("backends.eager", "backends.torchscript", "backends.cuda")


def register(
    name: str,
    factory: Callable[..., Any],
    unavailable: Callable[[], str | None] | None = None,
    description: str = "",
) -> None:
    """Register (or replace) a backend under `name`."""
    _REGISTRY[name] = Backend(name, factory, unavailable or (lambda: None), description)


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:  # a real import error inside the backend, not a backend not written yet
                raise


def registered() -> dict[str, Backend]:
    """Every registered backend, whether or not it can run here."""
    _load_builtins()
    return dict(_REGISTRY)


def available() -> list[str]:
    """The names of the backends that can run on this machine."""
    return [name for name, b in registered().items() if b.unavailable() is None]


def _choices() -> str:
    """What can run here, and why each other backend cannot."""
    here, elsewhere = [], []
    for name, backend in registered().items():
        reason = backend.unavailable()
        if reason is None:
            here.append(name)
        else:
            elsewhere.append(f"{name} ({reason})")
    return f"use one of {here}" + (f"; not available here: {', '.join(elsewhere)}" if elsewhere else "")


def get(name: str) -> Backend:
    """The backend called `name`; a BackendError listing what is available (and why not) otherwise."""
    backends = registered()
    if not isinstance(name, str) or name not in backends:
        raise BackendError(f"unknown backend {name!r}", fix=_choices())
    reason = backends[name].unavailable()
    if reason is not None:
        raise BackendError(f"backend {name!r} cannot run here: {reason}", fix=_choices())
    return backends[name]
