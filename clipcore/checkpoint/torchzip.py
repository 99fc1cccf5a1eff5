"""torch.save zip files and TorchScript archives, read in place.

Both are zips of stored (uncompressed) records under one top folder: `data.pkl` (the object, pickled) and
`data/<key>` (the raw bytes of each storage). The directory is checked before anything is read: member
names (no `..`, no absolute paths, no duplicates, one top folder), local headers that agree with the
central directory, and records that neither overlap nor run past the data. Tensors are then read one at a
time from their record's offset in the file, never by loading the whole archive.
"""

from __future__ import annotations

import collections
import json
import struct
import threading
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcore.checkpoint.entries import StoredTensor
from clipcore.checkpoint.files import RandomAccessFile, damaged
from clipcore.checkpoint.unpickler import StorageRef, TensorRef, load_pickle
from clipcore.errors import CheckpointError

_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # signature, version, flags, method, time, date, crc, sizes, lengths
MAX_PICKLE_BYTES = 1 << 30  # data.pkl of a state dict is tiny next to its data; anything this big is hostile
RESAVE_FIX = "load it with the tool that wrote it and re-save the weights with torch.save or safetensors"


@dataclass(frozen=True)
class Record:
    name: str  # relative to the top folder
    start: int  # first byte of the record's data in the file
    size: int
    crc: int
    stored: bool


class ZipArchive:
    """The checked directory of a torch zip: its top folder and where each record's bytes lie."""

    def __init__(self, file: RandomAccessFile) -> None:
        self.file, self.path = file, file.path
        infos, data_end = central_directory(file.path)
        names = [info.orig_filename for info in infos]  # as stored: zipfile's .filename cuts at a NUL
        for name in names:
            _check_name(self.path, name)
        duplicates = [name for name, count in collections.Counter(names).items() if count > 1]
        if duplicates:
            raise damaged(self.path, f"the zip holds several members called {duplicates[0]!r}; refusing to guess "
                                     "which one is meant")
        self.prefix = _top_folder(self.path, names)
        self.records: dict[str, Record] = {}
        spans = []
        for info in infos:
            start = self._data_start(info)
            end = start + info.compress_size
            spans.append((info.header_offset, end, info.orig_filename))
            if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
                raise damaged(self.path, f"stored member {info.orig_filename!r} declares {info.file_size} bytes "
                                         f"but holds {info.compress_size}")
            record = Record(info.orig_filename[len(self.prefix) + 1 :], start, info.compress_size, info.CRC,
                            info.compress_type == zipfile.ZIP_STORED)
            self.records[record.name] = record
        spans.sort()
        for (_, end, name), (next_start, _, next_name) in zip(spans, [*spans[1:], (data_end, 0, "")], strict=True):
            if end > next_start:
                where = f"member {next_name!r}" if next_name else "the zip directory"
                raise damaged(self.path, f"member {name!r} declares data up to byte {end}, which runs into {where}")

    def _data_start(self, info: zipfile.ZipInfo) -> int:
        # One read for the header and the name the directory expects (a model has hundreds of members).
        expected = len(info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace"))
        size = min(_LOCAL_HEADER.size + expected, self.file.size - info.header_offset)
        block = self.file.read(info.header_offset, max(size, _LOCAL_HEADER.size),
                               f"the local header of {info.filename!r}")
        fields = _LOCAL_HEADER.unpack(block[: _LOCAL_HEADER.size])
        signature, flags, name_length, extra_length = fields[0], fields[2], fields[9], fields[10]
        if signature != b"PK\x03\x04":
            raise damaged(self.path, f"the zip directory points member {info.filename!r} at byte "
                                     f"{info.header_offset}, where there is no member header")
        name = block[_LOCAL_HEADER.size :]
        if len(name) != name_length:
            name = self.file.read(info.header_offset + _LOCAL_HEADER.size, name_length, "a member name")
        if name.decode("utf-8" if flags & 0x800 else "cp437", "replace") != info.orig_filename:
            raise damaged(self.path, f"the member header at byte {info.header_offset} names {name!r}, "
                                     f"the zip directory {info.orig_filename!r}")
        if flags & 0x1:
            raise damaged(self.path, f"member {info.filename!r} is encrypted", fix=RESAVE_FIX)
        return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length

    def has(self, name: str) -> bool:
        return name in self.records

    def record(self, name: str, what: str) -> Record:
        record = self.records.get(name)
        if record is None:
            raise damaged(self.path, f"{what}: the archive has no record {self.prefix}/{name}")
        if not record.stored:
            raise damaged(self.path, f"record {self.prefix}/{name} is compressed; torch writes its records "
                                     "uncompressed, so another tool re-packed this file", fix=RESAVE_FIX)
        return record

    def read(self, name: str, limit: int) -> bytes:
        """A whole small record, checked against its CRC-32."""
        record = self.record(name, "reading the archive")
        if record.size > limit:
            raise damaged(self.path, f"record {self.prefix}/{name} declares {record.size} bytes, more than the "
                                     f"{limit} a checkpoint needs")
        data = self.file.read(record.start, record.size, f"record {self.prefix}/{name}")
        if zlib.crc32(data) != record.crc:
            raise damaged(self.path, f"record {self.prefix}/{name} does not match its CRC-32 checksum")
        return data


def central_directory(path: Path) -> tuple[list[zipfile.ZipInfo], int]:
    """The members, and where the central directory (the end of the members' data) starts."""
    try:
        with open(path, "rb") as handle:
            with _DIRECTORIES_LOCK:
                cached = _DIRECTORIES.get(path)
            if cached is not None and _tail(handle, cached[1]) == cached[2]:
                return list(cached[0]), cached[1]
            with zipfile.ZipFile(handle) as archive:
                infos, start = archive.infolist(), archive.start_dir
            tail = _tail(handle, start)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}", fix="check the path") from None
    except Exception as exc:  # zipfile raises BadZipFile, ValueError, struct.error, ... on a damaged directory
        raise damaged(path, f"the zip directory is unreadable ({type(exc).__name__}: {exc})") from None
    if tail is not None:
        with _DIRECTORIES_LOCK:
            _DIRECTORIES.pop(path, None)
            _DIRECTORIES[path] = (tuple(infos), start, tail)
            while len(_DIRECTORIES) > 4:
                del _DIRECTORIES[next(iter(_DIRECTORIES))]
    return infos, start


# Detecting the format and opening the archive both need the directory (slow to parse for a model's hundreds
# of members): the last few parses are kept with the bytes they came from, everything from the directory's
# start to the end of the file, and reused only while those bytes are unchanged.
_DIRECTORIES: dict[Path, tuple[tuple[zipfile.ZipInfo, ...], int, bytes]] = {}
_DIRECTORIES_LOCK = threading.Lock()
MAX_CACHED_DIRECTORY_BYTES = 1 << 22


def _tail(handle: Any, start: int) -> bytes | None:
    """The file's bytes from `start` to its end; None (not cached) when there are too many."""
    handle.seek(start)
    tail = handle.read(MAX_CACHED_DIRECTORY_BYTES + 1)
    return tail if len(tail) <= MAX_CACHED_DIRECTORY_BYTES else None


def _check_name(path: Path, name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or "\0" in name or ".." in parts or ":" in parts[0]:
        raise damaged(path, f"zip member {name!r} points outside the archive (path traversal); refusing it",
                      fix="do not unpack or load this file")


def _data_pickles(names: list[str]) -> list[str]:
    """The `<folder>/data.pkl` members: exactly one in a torch zip."""
    return [name for name in names if name.count("/") == 1 and name.endswith("/data.pkl")]


def _top_folder(path: Path, names: list[str]) -> str:
    pickles = _data_pickles(names)
    if len(pickles) != 1:
        if any(name.endswith("/model.json") for name in names):
            raise damaged(path, "this is a TorchScript archive of the format torch wrote before 1.4 "
                                "(model.json), which clipcore does not read", fix=RESAVE_FIX)
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        what = "no" if not pickles else "several"
        raise CheckpointError(
            f"{path} is a zip archive but not a PyTorch checkpoint: it has {what} <folder>/data.pkl "
            f"(members: {shown or 'none'})",
            fix="pass a torch.save file, a TorchScript archive (.pt), a legacy torch.save file or safetensors",
        )
    prefix = pickles[0].split("/")[0]
    stray = [name for name in names if not name.startswith(prefix + "/")]
    if stray:
        raise damaged(path, f"member {stray[0]!r} lies outside the archive's folder {prefix!r}/")
    return prefix


def zip_kind(names: list[str]) -> str | None:
    """'torchscript' or 'torch-zip' from a zip's member names; None when neither."""
    pickles = _data_pickles(names)
    if len(pickles) != 1:
        return None
    prefix = pickles[0][: -len("data.pkl")]
    script = any(name == prefix + "constants.pkl" or name.startswith(prefix + "code/") for name in names)
    return "torchscript" if script else "torch-zip"


def open_torch_zip(file: RandomAccessFile, script: bool) -> tuple[Any, Any, dict[str, Any]]:
    """Unpickle the archive's data.pkl. Returns (object, to_entry, extras): to_entry turns a TensorRef into an
    Entry; extras is metadata from the archive's data files (see `script_extras`)."""
    archive = ZipArchive(file)
    byteorder = archive.read("byteorder", 16) if archive.has("byteorder") else b"little"
    if byteorder not in (b"little", b"big"):
        raise damaged(file.path, f"record byteorder says {byteorder[:16]!r}, not 'little' or 'big'")
    where = f"{file.path} ({archive.prefix}/data.pkl)"
    obj, storages = load_pickle(archive.read("data.pkl", MAX_PICKLE_BYTES), where, script=script)
    starts: dict[int, int] = {}
    for storage in storages:
        record = archive.record(f"data/{storage.key}", f"storage {storage.key!r} of data.pkl")
        if storage.base + storage.nbytes > record.size:
            raise damaged(file.path, f"storage {storage.key!r} declares {storage.nbytes} bytes but its record "
                                     f"{archive.prefix}/data/{storage.key} holds {record.size}")
        starts[id(storage)] = record.start + storage.base
    swap = byteorder == b"big"

    def to_entry(ref: TensorRef) -> StoredTensor:
        storage: StorageRef = ref.storage
        return StoredTensor(file, starts[id(storage)] + ref.offset * ref.dtype.itemsize, ref.shape, ref.stride,
                            ref.dtype, f"storage {archive.prefix}/data/{storage.key}", swap)

    return obj, to_entry, script_extras(archive) if script else {}


# Data files a TorchScript archive may carry under extra/ (torch.jit.save's _extra_files), read as metadata:
# clipcore.export_torchscript stores the model's OpenCLIP config there, since the shapes cannot tell it all.
EXTRA_JSON = {"open_clip_config.json": "open_clip_config"}
MAX_EXTRA_BYTES = 1 << 20


def script_extras(archive: ZipArchive) -> dict[str, Any]:
    """{metadata key: parsed JSON} for the known extra/ files present in the archive (plain data, no code)."""
    extras = {}
    for name, key in EXTRA_JSON.items():
        if not archive.has(f"extra/{name}"):
            continue
        data = archive.read(f"extra/{name}", MAX_EXTRA_BYTES)
        try:
            value = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise damaged(archive.path, f"record {archive.prefix}/extra/{name} is not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise damaged(archive.path, f"record {archive.prefix}/extra/{name} is not a JSON object")
        extras[key] = value
    return extras
