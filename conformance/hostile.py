"""Builders of malicious and broken checkpoint files, for the checkpoint security tests.

Everything here only writes bytes; nothing is unpickled. The payload pickles are live: plain
`pickle.loads` of them would run their command (the tests check that too, so a refusal means something).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
import struct
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch's legacy-format magic


class Call:
    """Pickles as `func(*args)`: what an attacker's object reduces to."""

    def __init__(self, func: Callable, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(marker: Path) -> dict[str, tuple[str, bytes]]:
    """name -> (the global the file asks for, a pickled dict whose value would create `marker`)."""
    touch = ["touch", str(marker)]
    python = f"open({str(marker)!r}, 'w').close()"
    calls = {
        "os.system": Call(os.system, f"touch '{marker}'"),
        "builtins.exec": Call(exec, python),
        "builtins.eval": Call(eval, python),
        "subprocess.call": Call(subprocess.call, touch),
    }
    pickles = {name: pickle.dumps({"w": func}, protocol=2) for name, func in calls.items()}
    # The same call through other opcodes: STACK_GLOBAL (protocol 4) and INST (protocol 0).
    pickles["os.system via STACK_GLOBAL"] = pickle.dumps({"w": calls["os.system"]}, protocol=4)
    pickles["os.system via INST"] = b"(dp0\nVw\n(S'touch " + str(marker).encode() + b"'\nios\nsystem\ns."
    return {name: (first_global(data), data) for name, data in pickles.items()}


def first_global(data: bytes) -> str:
    """The first global a pickle names, as module.name (protocol 2 writes builtins as __builtin__)."""
    strings: list[str] = []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name in ("GLOBAL", "INST"):
            return arg.replace(" ", ".")
        if opcode.name == "STACK_GLOBAL":
            return f"{strings[-2]}.{strings[-1]}"
        if isinstance(arg, str):
            strings.append(arg)
    raise ValueError("the pickle names no global")


def harmless_globals() -> dict[str, bytes]:
    """Pickles of globals that run nothing dangerous here but are still not tensor rebuilds."""
    return {
        "collections.Counter": pickle.dumps({"w": Call(collections.Counter, "abc")}, protocol=2),
        "torch.serialization.load": pickle.dumps({"w": torch.load}, protocol=2),
        "__builtin__.getattr": b"\x80\x02}q\x00X\x01\x00\x00\x00wc__builtin__\ngetattr\nq\x01s.",
        "torch.nn.modules.linear.Linear": _module_pickle(),
    }


def _module_pickle() -> bytes:
    """data.pkl of torch.save(nn.Linear(2, 2)): a whole pickled module, not a state dict."""
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), buffer)
    with zipfile.ZipFile(buffer) as archive:
        return archive.read(next(name for name in archive.namelist() if name.endswith("/data.pkl")))


# --- tensors pickled with chosen (possibly impossible) storages and views -------------------------------


class FakeStorage:
    def __init__(self, key: str, storage_type: str = "FloatStorage", numel: int = 4) -> None:
        self.key, self.storage_type, self.numel = key, storage_type, numel


class FakeTensor:
    """Reduces to torch's tensor rebuild over a FakeStorage, with any offset, size and stride."""

    def __init__(self, storage: FakeStorage, offset: int = 0, size=(4,), stride=(1,), state=None) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)
        self.state = state  # if set, pickled as a BUILD on the rebuilt tensor

    def __reduce__(self):
        args = (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())
        if self.state is None:
            return torch._utils._rebuild_tensor_v2, args
        return torch._utils._rebuild_tensor_v2, args, self.state


class _StoragePickler(pickle.Pickler):
    def __init__(self, file, legacy: bool) -> None:
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            record = ("storage", getattr(torch, obj.storage_type), obj.key, "cpu", obj.numel)
            return (*record, None) if self.legacy else record
        return None


def tensor_pickle(obj: object, legacy: bool = False) -> bytes:
    """Pickle `obj` (which may hold FakeTensors) the way torch.save writes data.pkl."""
    buffer = io.BytesIO()
    _StoragePickler(buffer, legacy).dump(obj)
    return buffer.getvalue()


# --- containers ----------------------------------------------------------------------------------------


def write_zip(path: Path, members: dict[str, bytes], compress: tuple[str, ...] = ()) -> Path:
    """A zip with exactly these members (names taken as given), stored unless named in `compress`."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED
            archive.writestr(info, data)
    return path


def torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None, script: bool = False,
              extra: dict[str, bytes] | None = None, prefix: str = "archive") -> Path:
    """A torch.save-style zip (or a TorchScript-style one with `script`) around a given data.pkl."""
    members = {f"{prefix}/data.pkl": data_pkl, f"{prefix}/byteorder": b"little", f"{prefix}/version": b"3\n"}
    if script:
        members[f"{prefix}/constants.pkl"] = pickle.dumps((), protocol=2)
        members[f"{prefix}/code/__torch__/model.py"] = b"class Model(Module):\n  pass\n"
    for key, data in (storages if storages is not None else {"0": bytes(16)}).items():
        members[f"{prefix}/data/{key}"] = data
    members.update(extra or {})
    return write_zip(path, members)


def legacy_file(path: Path, object_pickle: bytes, storages: dict[str, bytes] | None = None,
                little_endian: bool = True, head: bytes | None = None) -> Path:
    """A legacy (non-zip) torch.save file: five pickles, then each storage as (element count, bytes).

    `storages` maps key -> raw bytes of float32 elements; `head` replaces the first pickle (the magic).
    """
    storages = {"0": bytes(16)} if storages is None else storages
    sys_info = {"protocol_version": 1001, "little_endian": little_endian,
                "type_sizes": {"short": 2, "int": 4, "long": 8}}
    parts = [head if head is not None else pickle.dumps(MAGIC_NUMBER, protocol=2),
             pickle.dumps(1001, protocol=2), pickle.dumps(sys_info, protocol=2), object_pickle,
             pickle.dumps(sorted(storages), protocol=2)]
    count = "<q" if little_endian else ">q"
    for key in sorted(storages):
        parts += [struct.pack(count, len(storages[key]) // 4), storages[key]]
    path.write_bytes(b"".join(parts))
    return path


def rewrite_zip(source: Path, target: Path, edit: Callable[[str, bytes], bytes]) -> Path:
    """Copy a zip member by member through `edit(name, data)` (CRCs recomputed, members stored)."""
    with zipfile.ZipFile(source) as archive:
        members = {info.filename: edit(info.filename, archive.read(info)) for info in archive.infolist()}
    return write_zip(target, members)


def central_entries(data: bytes) -> list[int]:
    """Byte offsets of the central-directory entries of a zip held in memory."""
    offsets, at = [], data.find(b"PK\x01\x02")
    while at >= 0:
        offsets.append(at)
        at = data.find(b"PK\x01\x02", at + 4)
    return offsets
