"""What the towers built by other libraries (timm, transformers) share: the optional import, a cheap build,
the constant buffers those libraries compute at construction, and re-initialisation the library's way.

clipcore builds models on the meta device, then assigns a checkpoint's tensors. timm and transformers also
register *non-persistent* buffers (rotary tables, relative-position indices, sinusoidal positions, position
ids) whose values are computed in `__init__` and are in no checkpoint. On the meta device they would be
lost, so a foreign tower is built "lean" instead: parameters go to the meta device as they are registered,
buffers are computed for real on the CPU (they are small). `ForeignTower` keeps a CPU copy of those
constants and puts them back wherever the module is moved, `to_empty` included.

A few models defeat the lean build (one runs its stem on a dummy image to measure it; Swin computes its
attention masks on the parameters' device). They are built entirely on meta, like the reference, and the
constants that are missing are computed once, by a real build on the CPU, when the tower is first
materialised (never for a model that is only inspected on meta).
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TypeVar

import torch
from torch import nn

from clipcore.errors import UnsupportedModelError

__all__ = ["ForeignTower", "import_extra", "lean_build", "settle_constants"]

# extra name -> (module to import, what it provides), for the error message when it is missing.
_EXTRAS = {
    "timm": ("timm", "timm image towers"),
    "hf": ("transformers", "Hugging Face text towers"),
}


def import_extra(extra: str, model: str) -> ModuleType:
    """Import the library behind an optional extra, or say which extra `model` needs."""
    module, what = _EXTRAS[extra]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UnsupportedModelError(
            f"{model!r} needs `{module}` ({what}), which is not installed ({e})",
            fix=f"pip install 'clipcore[{extra}]'",
        ) from e


T = TypeVar("T")
_LEAN_LOCK = threading.Lock()


@contextlib.contextmanager
def _parameters_to_meta() -> Iterator[None]:
    # Every parameter registered while this is active is replaced by a meta tensor of the same shape and
    # dtype; the library's initialisers then run on meta tensors, which costs nothing.
    original = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    with _LEAN_LOCK:
        nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
        try:
            yield
        finally:
            nn.Module.register_parameter = original  # type: ignore[method-assign]


def lean_build(build: Callable[[], T]) -> T:
    """Run `build` the cheap way when the default device is meta (parameters on meta, buffers real, on
    the CPU), and plainly otherwise (the library allocates and initialises on the default device)."""
    if torch.get_default_device().type != "meta":
        return build()
    try:
        with torch.device("cpu"), _parameters_to_meta():
            return build()
    except (RuntimeError, NotImplementedError):  # it computed with parameters and buffers together
        return build()  # all on meta; the constants are recovered when needed


class ForeignTower(nn.Module):
    """A tower whose modules come from another library. Subclasses call `remember_constants()` at the end
    of `__init__`, and implement `rebuild()` (a freshly built, library-initialised copy of themselves)."""

    _constant_names: tuple[str, ...] = ()
    _constants: dict[str, torch.Tensor]

    def remember_constants(self) -> None:
        """Keep a CPU copy of every non-persistent buffer (the values the library computed at build time)."""
        persistent = set(self.state_dict(keep_vars=True))
        buffers = [(name, buf) for name, buf in self.named_buffers() if name not in persistent]
        self._constant_names = tuple(name for name, _ in buffers)
        self._constants = {name: buf.detach().to("cpu", copy=True) for name, buf in buffers if not buf.is_meta}

    def constant_names(self) -> tuple[str, ...]:
        """The non-persistent buffers: computed by the library, in no checkpoint."""
        return self._constant_names

    def _constant_values(self) -> dict[str, torch.Tensor]:
        if len(self._constants) < len(self._constant_names):  # built on meta: compute them for real, once
            with torch.device("cpu"):
                fresh = self.rebuild()
            buffers = dict(fresh.named_buffers())
            self._constants = {name: buffers[name].detach().clone() for name in self._constant_names}
        return self._constants

    def restore_constants(self, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        """Give every constant buffer its computed value on `device` (default: where the buffer is now;
        nothing happens to buffers on the meta device), floating ones in `dtype` when one is given."""
        for name in self._constant_names:
            owner_name, _, attr = name.rpartition(".")
            owner = self.get_submodule(owner_name)
            current = owner._buffers[attr]
            target = torch.device(device) if device is not None else current.device
            if target.type == "meta":
                continue
            value = self._constant_values()[name]
            cast = dtype if dtype is not None and value.is_floating_point() else current.dtype
            owner._buffers[attr] = value.to(device=target, dtype=cast)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def, override]
        # `to_empty` (and `to`) rebuild every tensor through `fn`: the constants come back with their values.
        super()._apply(fn, recurse)
        if self._constant_names:
            self.restore_constants()
        return self

    def rebuild(self) -> nn.Module:
        raise NotImplementedError

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise as the library does: build a fresh copy on this tower's device (the library initialises
        it) and copy its tensors in, so parameters keep their identity."""
        device = next(self.parameters()).device
        if device.type == "meta":
            return  # nothing to initialise; assign a state dict or `to_empty` first
        with torch.device(device):
            fresh = self.rebuild()
        fresh_tensors = dict(fresh.named_parameters())
        fresh_tensors.update(fresh.named_buffers())
        own = dict(self.named_parameters())
        own.update(self.named_buffers())
        for name, tensor in own.items():
            tensor.copy_(fresh_tensors[name])


def settle_constants(model: nn.Module, device: torch.device | str, dtype: torch.dtype | None = None) -> None:
    """After a state dict was assigned to a model built on meta: put the foreign towers' constant buffers on
    `device` (in `dtype` when given, as `model.to(dtype)` would). A no-op for native towers."""
    for module in model.modules():
        if isinstance(module, ForeignTower):
            module.restore_constants(torch.device(device), dtype)
