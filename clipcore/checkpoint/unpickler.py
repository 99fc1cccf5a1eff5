"""The restricted unpickler: a checkpoint's pickle becomes plain data plus inert tensor references.

Nothing named by the pickle is imported or called. `find_class` answers from a fixed table of stand-ins
written here (tensor rebuilds that only record storage, offset, shape and stride; storage types that only
carry a dtype; TorchScript module classes that only record their attributes); every other global raises
UnsafeCheckpointError before the pickle machine can use it. A scan of the opcodes before unpickling refuses
plain GLOBAL/INST names up front and bounds every length and memo index by the size of the pickle, so a
crafted pickle cannot make the C unpickler allocate more than a small multiple of its own size.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import re
from collections.abc import Callable
from typing import Any

import torch

from clipcore.checkpoint.dtypes import DTYPE_GLOBALS, STORAGE_TYPES, UNTYPED_STORAGES
from clipcore.checkpoint.entries import extent
from clipcore.checkpoint.files import damaged
from clipcore.errors import ClipcoreError, UnsafeCheckpointError

MAX_NDIM = 64
MAX_INDEX = 1 << 62  # sizes, strides and offsets must fit torch's int64 arithmetic with room to spare

UNSAFE_FIX = (
    "do not load this file with torch.load(weights_only=False) or pickle either; if it is yours, re-save "
    "only the weights: torch.save(model.state_dict(), path) or safetensors.torch.save_file(...)"
)


class _Inert:
    """Base of the stand-ins: a pickle may not BUILD (set state on) them."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise TypeError(f"a {type(self).__name__} cannot take pickled state")


class StorageType(_Inert):
    """What `torch.FloatStorage` & co. stand for: only an element dtype."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name, self.dtype = name, dtype


class StorageRef(_Inert):
    """A storage named by a persistent id: `nbytes` bytes at byte `base` of the record called `key`."""

    __slots__ = ("base", "dtype", "key", "nbytes")

    def __init__(self, key: str, dtype: torch.dtype, nbytes: int, base: int = 0) -> None:
        self.key, self.dtype, self.nbytes, self.base = key, dtype, nbytes, base


class TensorRef(_Inert):
    """A tensor the pickle asked to rebuild: a strided view of a storage (offset/stride in elements)."""

    __slots__ = ("dtype", "offset", "shape", "storage", "stride")

    def __init__(self, storage: StorageRef, offset: int, shape: tuple, stride: tuple, dtype: torch.dtype):
        self.storage, self.offset, self.shape, self.stride, self.dtype = storage, offset, shape, stride, dtype


class ScriptObject(_Inert):
    """A TorchScript module object (`__torch__.<path> <Class>`), never imported: it keeps its attributes."""

    __slots__ = ("attributes",)
    qualname = "__torch__"

    def __new__(cls, *args: Any) -> ScriptObject:
        if args:
            raise TypeError(f"{cls.qualname} takes no constructor arguments")
        obj = super().__new__(cls)
        obj.attributes = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        # Module objects carry a dict of attributes; other TorchScript classes (custom C++ classes) carry
        # opaque state, which holds no CLIP weights and is dropped.
        self.attributes = state if isinstance(state, dict) else {}


# --- stand-ins for the tensor rebuild functions ------------------------------------------------------------


def _index(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < MAX_INDEX:  # bool is not a valid index either
        raise ValueError(f"{what} {value!r} is not a non-negative integer")
    return value


def _indices(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > MAX_NDIM:
        raise ValueError(f"{what} {value!r} is not a tuple of at most {MAX_NDIM} integers")
    return tuple(_index(v, what) for v in value)


def _tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: torch.dtype | None) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise ValueError(f"a tensor's storage is a {type(storage).__name__}, not a storage reference")
    offset, shape, steps = _index(offset, "storage offset"), _indices(size, "size"), _indices(stride, "stride")
    if len(shape) != len(steps):
        raise ValueError(f"size {shape} and stride {steps} have different lengths")
    dtype = dtype or storage.dtype
    span = extent(shape, steps)
    end = (offset + span) * dtype.itemsize
    if span and end > storage.nbytes:
        raise ValueError(
            f"a tensor (offset {offset}, size {shape}, stride {steps}, {dtype}) needs bytes up to {end} "
            f"of storage {storage.key!r}, which holds {storage.nbytes} bytes"
        )
    return TensorRef(storage, offset, shape, steps, dtype)


def _check_metadata(metadata: Any) -> None:
    if metadata:  # conj/neg bits: views torch only makes for complex tensors, never in CLIP weights
        raise ValueError(f"tensor metadata {metadata!r} (conjugate/negative views) is not supported")


def _rebuild_tensor(storage, storage_offset, size, stride):  # torch <= 0.4 files
    return _tensor(storage, storage_offset, size, stride, None)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    _check_metadata(metadata)
    return _tensor(storage, storage_offset, size, stride, None)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    _check_metadata(metadata)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{dtype!r} is not a dtype")
    return _tensor(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    if not isinstance(data, TensorRef):
        raise ValueError(f"a parameter wraps a {type(data).__name__}, not a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _size(sizes=()):
    return _indices(sizes, "torch.Size")


def _same(value, *type_tag):  # torch.jit._pickle's list builders and type tags: the value itself
    return value


_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): _size,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
_STORAGES: dict[tuple[str, str], StorageType] = {
    **{("torch", name): StorageType(name, dtype) for name, dtype in STORAGE_TYPES.items()},
    **{key: StorageType("UntypedStorage", torch.uint8) for key in UNTYPED_STORAGES},
}
_DTYPES = {("torch", name): dtype for name, dtype in DTYPE_GLOBALS.items()}
# TorchScript archives only: helpers of the TorchScript pickler, and the module classes.
_SCRIPT_FUNCTIONS = {
    ("torch.jit._pickle", name): _same
    for name in ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "restore_type_tag")
}
_SCRIPT_MODULE = re.compile(r"__torch__(\.[A-Za-z_][A-Za-z0-9_]*)*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --- the unpickler -----------------------------------------------------------------------------------------


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, where: str, script: bool, legacy: bool) -> None:
        super().__init__(io.BytesIO(data), fix_imports=False, encoding="utf-8")
        self.where, self.script, self.legacy = where, script, legacy
        self.storages: dict[tuple[str, torch.dtype, int, int], StorageRef] = {}
        self.script_classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        return resolve_global(module, name, self.where, self.script, self.script_classes)

    def persistent_load(self, pid: Any) -> StorageRef:
        fields = 6 if self.legacy else 5
        if not (isinstance(pid, tuple) and len(pid) == fields and pid[0] in ("storage", b"storage")):
            raise ValueError(f"persistent id {_short(pid)} is not a {fields}-field storage record")
        _, stype, key, _location, numel = pid[:5]  # the location (cpu, cuda:0) says where it was saved: ignored
        if not isinstance(stype, StorageType):
            raise ValueError(f"persistent id {_short(pid)} does not name a storage type")
        key = key.decode("ascii") if isinstance(key, bytes) else key
        if not isinstance(key, str):
            raise ValueError(f"storage key {key!r} is not a string")
        item = stype.dtype.itemsize
        nbytes, base = _index(numel, "storage size") * item, 0
        view = pid[5] if self.legacy else None
        if view is not None:  # legacy storage views: (view key, element offset, element count) of the root
            if not (isinstance(view, tuple) and len(view) == 3):
                raise ValueError(f"storage view {_short(view)} is malformed")
            base, view_bytes = _index(view[1], "view offset") * item, _index(view[2], "view size") * item
            if base + view_bytes > nbytes:
                raise ValueError(f"storage view {_short(view)} runs past its storage of {numel} elements")
            nbytes = view_bytes
        ident = (key, stype.dtype, nbytes, base)
        if ident not in self.storages:
            self.storages[ident] = StorageRef(key, stype.dtype, nbytes, base)
        return self.storages[ident]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


def resolve_global(module: str, name: str, where: str, script: bool, classes: dict[str, type]) -> Any:
    """The stand-in for `module.name`, or UnsafeCheckpointError. Imports nothing."""
    key = (module, name)
    if key in _FUNCTIONS:
        return _FUNCTIONS[key]
    if key in _STORAGES:
        return _STORAGES[key]
    if key in _DTYPES:
        return _DTYPES[key]
    if script and key in _SCRIPT_FUNCTIONS:
        return _SCRIPT_FUNCTIONS[key]
    if script and _is_script_class(module, name):
        qualname = f"{module}.{name}"
        if qualname not in classes:
            classes[qualname] = type(name, (ScriptObject,), {"__slots__": (), "qualname": qualname})
        return classes[qualname]
    raise UnsafeCheckpointError(
        f"{where}: the pickle asks for the global {_dotted(module, name)}, which is not a tensor rebuild "
        "function or storage type; refused before anything was called",
        fix=UNSAFE_FIX,
    )


def _is_script_class(module: Any, name: Any) -> bool:
    return (isinstance(module, str) and isinstance(name, str)
            and _SCRIPT_MODULE.fullmatch(module) is not None and _IDENTIFIER.fullmatch(name) is not None)


def _dotted(module: Any, name: Any) -> str:
    return f"{module}.{name}" if isinstance(module, str) and isinstance(name, str) else _short((module, name))


def prescan(data: bytes, where: str, script: bool) -> None:
    """Walk the opcodes: refuse unknown GLOBAL/INST names, extension codes, out-of-bounds lengths, frames and
    memo indices (the C unpickler sizes its memo by the largest index)."""
    classes: dict[str, type] = {}
    try:
        for opcode, arg, pos in pickletools.genops(data):
            if opcode.name in ("GLOBAL", "INST"):
                module, _, name = arg.partition(" ")
                resolve_global(module, name, where, script, classes)
            elif opcode.name in ("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"):
                if not isinstance(arg, int) or not 0 <= arg <= len(data):
                    raise ValueError(f"memo index {arg!r} at byte {pos} is out of range")
            elif opcode.name in ("EXT1", "EXT2", "EXT4"):  # never written by torch; resolved through a
                # process-wide cache that can bypass find_class, so refused outright
                raise UnsafeCheckpointError(
                    f"{where}: the pickle names a global through copyreg extension code {arg}, which can stand "
                    "for any function; refused before anything was called",
                    fix=UNSAFE_FIX,
                )
            elif opcode.name == "FRAME" and arg > len(data) - pos:
                raise ValueError(f"a frame of {arg} bytes at byte {pos} runs past the end")
    except ClipcoreError:
        raise
    except Exception as exc:  # genops reports truncation and unknown opcodes as ValueError
        raise damaged(where, f"the pickle is malformed ({exc})") from None


def load_pickle(
    data: bytes, where: str, *, script: bool = False, legacy: bool = False
) -> tuple[Any, list[StorageRef]]:
    """Unpickle `data` with the stand-ins. Returns the object and every storage its tensors refer to."""
    prescan(data, where, script)
    unpickler = _Unpickler(data, where, script, legacy)
    try:
        obj = unpickler.load()
    except ClipcoreError:
        raise
    except Exception as exc:  # any failure of a crafted or damaged pickle is a damaged file, never a crash
        raise damaged(where, f"the pickle is malformed ({type(exc).__name__}: {exc})") from None
    return obj, list(unpickler.storages.values())


class _CappedReader:
    """A buffered file view for pickletools that refuses single reads over a limit (no huge allocations)."""

    CHUNK = 1 << 12

    def __init__(self, read: Callable[[int, int], bytes], start: int, end: int, limit: int) -> None:
        self._read, self.pos, self.end, self.limit = read, start, end, limit
        self._buf, self._buf_start = b"", start

    def read(self, n: int = -1) -> bytes:
        n = self.end - self.pos if n < 0 else min(n, self.end - self.pos)
        if n > self.limit:
            raise ValueError(f"a pickle argument of {n} bytes is larger than the {self.limit} bytes allowed")
        lo = self.pos - self._buf_start
        if lo < 0 or lo + n > len(self._buf):  # refill: the window starts at pos
            self._buf_start, lo = self.pos, 0
            self._buf = self._read(self.pos, min(max(n, self.CHUNK), self.end - self.pos))
        data = self._buf[lo : lo + n]
        self.pos += len(data)
        return data

    def readline(self) -> bytes:
        line = b""
        while not line.endswith(b"\n") and self.pos < self.end:
            line += self.read(1)
            if len(line) > 1 << 16:
                raise ValueError("a text line of the pickle is longer than 64 KiB")
        return line

    def tell(self) -> int:
        return self.pos


def pickle_end(read: Callable[[int, int], bytes], start: int, end: int, where: str, limit: int) -> int:
    """Where the pickle that starts at byte `start` of a file ends (one past its STOP opcode)."""
    reader = _CappedReader(read, start, end, limit)
    try:
        for opcode, _arg, _pos in pickletools.genops(reader):
            if opcode.name == "STOP":
                return reader.tell()
    except ClipcoreError:
        raise
    except Exception as exc:
        raise damaged(where, f"the pickle at byte {start} is malformed ({exc})") from None
    raise damaged(where, f"the pickle at byte {start} has no end")
