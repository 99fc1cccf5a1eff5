"""The legacy (non-zip) torch.save format, read lazily with the same restricted unpickler as the zips.

Layout: five pickles back to back (the magic number, the protocol version 1001, a dict of system info, the
object, the sorted list of storage keys), then for each key in that order an 8-byte element count and the
storage's raw bytes. Parsing the pickles and stepping over the counts finds every storage's offset without
reading tensor data; tensors are then read one by one like the zip formats. torch.load(weights_only=True)
would read the whole file at once, and without these bounds on what the file declares.
"""

from __future__ import annotations

import struct
from typing import Any

from clipcore.checkpoint.entries import StoredTensor
from clipcore.checkpoint.files import RandomAccessFile, damaged
from clipcore.checkpoint.unpickler import StorageRef, TensorRef, load_pickle, pickle_end

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
MAGIC_PICKLED = b"\x8a\x0a" + MAGIC_NUMBER.to_bytes(10, "little")  # LONG1 opcode with the magic number
MAX_PICKLE_ARG = 64 << 20  # no string in a state-dict pickle comes near this


def looks_legacy(head: bytes) -> bool:
    """A pickle (PROTO opcode) whose first value is torch's magic number."""
    return head[:1] == b"\x80" and MAGIC_PICKLED in head[:32]


def open_legacy(file: RandomAccessFile) -> tuple[Any, Any]:
    """Parse the pickles and the storage table. Returns (object, to_entry) like open_torch_zip."""
    pos = 0

    def next_pickle(what: str, legacy: bool = False) -> tuple[Any, list[StorageRef]]:
        nonlocal pos
        end = pickle_end(file.read, pos, file.size, f"{file.path} ({what})", MAX_PICKLE_ARG)
        data = file.read(pos, end - pos, what)
        pos = end
        return load_pickle(data, f"{file.path} ({what})", legacy=legacy)

    if next_pickle("magic number")[0] != MAGIC_NUMBER:
        raise damaged(file.path, "it does not start with torch's magic number")
    if next_pickle("protocol version")[0] != PROTOCOL_VERSION:
        raise damaged(file.path, f"its protocol version is not {PROTOCOL_VERSION}")
    sys_info = next_pickle("system info")[0]
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    obj, storages = next_pickle("the pickled object", legacy=True)
    keys = next_pickle("storage keys")[0]
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys) or len(set(keys)) < len(keys):
        raise damaged(file.path, "its list of storage keys is malformed")

    by_key: dict[str, list[StorageRef]] = {}
    for storage in storages:
        by_key.setdefault(storage.key, []).append(storage)
    missing = sorted(set(by_key) - set(keys)) or sorted(set(keys) - set(by_key))
    if missing:
        raise damaged(file.path, f"storage {missing[0]!r} is used without being stored, or stored without use")
    count = struct.Struct("<q" if little else ">q")
    starts: dict[str, int] = {}
    for key in keys:
        dtypes = {storage.dtype for storage in by_key[key]}
        if len(dtypes) != 1:
            raise damaged(file.path, f"storage {key!r} is used with several dtypes {sorted(map(str, dtypes))}")
        itemsize = dtypes.pop().itemsize
        (numel,) = count.unpack(file.read(pos, count.size, f"the size of storage {key!r}"))
        start = pos + count.size
        nbytes = numel * itemsize
        if numel < 0 or start + nbytes > file.size:
            raise damaged(file.path, f"storage {key!r} declares {numel} elements, past the end of the file")
        for storage in by_key[key]:
            if storage.base + storage.nbytes > nbytes:
                raise damaged(file.path, f"a tensor declares {storage.nbytes} bytes of storage {key!r}, "
                                         f"which holds {nbytes}")
        starts[key] = start
        pos = start + nbytes
    swap = not little

    def to_entry(ref: TensorRef) -> StoredTensor:
        start = starts[ref.storage.key] + ref.storage.base + ref.offset * ref.dtype.itemsize
        return StoredTensor(file, start, ref.shape, ref.stride, ref.dtype, f"storage {ref.storage.key}", swap)

    return obj, to_entry

