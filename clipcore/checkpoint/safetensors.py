"""safetensors files: the header is checked here, byte by byte, and tensors are views of a memory map.

Layout: an 8-byte little-endian header length N, N bytes of JSON ({name: {dtype, shape, data_offsets}},
plus an optional "__metadata__" of strings), then the data, every byte of which belongs to exactly one
tensor. A tensor read in its stored dtype comes from the memory map (no copy); a tensor read in another
dtype is read from the file into a small buffer and converted, so converting a whole file never keeps the
mapped pages of the source around.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import torch

from clipcore.checkpoint.dtypes import SAFETENSORS_DTYPES
from clipcore.checkpoint.entries import Entry, StoredTensor
from clipcore.checkpoint.files import RandomAccessFile, damaged

MAX_HEADER_BYTES = 100_000_000
MAX_NDIM = 64


@dataclass(eq=False)
class SafetensorsTensor(Entry):
    stored: StoredTensor

    @property
    def shape(self) -> tuple[int, ...]:
        return self.stored.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.stored.dtype

    def read(self, dtype: torch.dtype) -> torch.Tensor:
        if dtype == self.dtype:
            stored = self.stored
            view = stored.file.view(stored.offset, stored.shape, stored.dtype, stored.what)  # no copy
            if view is not None:
                return view
        return self.stored.read(dtype)

    def read_into(self, out: torch.Tensor) -> None:
        self.stored.read_into(out)  # through a scratch buffer, so no mapped page stays resident

    def maps(self, dtype: torch.dtype) -> bool:
        return dtype == self.dtype


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) < len(keys):
        raise ValueError(f"the header names {next(k for k in keys if keys.count(k) > 1)!r} twice")
    return dict(pairs)


def read_header(file: RandomAccessFile) -> tuple[dict[str, dict], dict[str, str], int]:
    """The checked tensor table, the __metadata__ strings, and where the data starts."""
    path = file.path
    if file.size < 8:
        raise damaged(path, f"it has {file.size} bytes, fewer than safetensors' 8-byte header length")
    (length,) = struct.unpack("<Q", file.read(0, 8, "the header length"))
    if length > MAX_HEADER_BYTES or length > file.size - 8:
        raise damaged(path, f"its safetensors header claims {length} bytes; the file has {file.size - 8} after "
                            f"the length and headers are limited to {MAX_HEADER_BYTES} bytes")
    raw = file.read(8, length, "the header")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_pairs_without_duplicates)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise damaged(path, f"its safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise damaged(path, "its safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise damaged(path, "its __metadata__ is not an object of strings")
    data_start, data_size = 8 + length, file.size - 8 - length
    spans = []
    for name, info in header.items():
        spans.append((*_check_tensor(path, name, info), name))
    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin != position:
            what = "overlaps the tensor before it" if begin < position else f"leaves a gap at byte {position}"
            raise damaged(path, f"tensor {name!r} (data bytes {begin}..{end}) {what}")
        position = end
    if position != data_size:
        raise damaged(path, f"its tensors cover {position} bytes of data but the file holds {data_size}")
    return header, metadata, data_start


def _check_tensor(path: Any, name: str, info: Any) -> tuple[int, int]:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise damaged(path, f"the header entry of {name!r} is not {{dtype, shape, data_offsets}}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in SAFETENSORS_DTYPES:
        raise damaged(path, f"tensor {name!r} has dtype {dtype!r}, which this torch cannot hold",
                      fix=f"supported dtypes: {', '.join(SAFETENSORS_DTYPES)}")
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM
            and all(type(n) is int and n >= 0 for n in shape)):
        raise damaged(path, f"tensor {name!r} has shape {shape!r}, not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise damaged(path, f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end] with begin <= end")
    expected = math.prod(shape) * SAFETENSORS_DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != expected:
        raise damaged(path, f"tensor {name!r} ({dtype}, shape {shape}) needs {expected} bytes but its "
                            f"data_offsets span {offsets[1] - offsets[0]}")
    return offsets[0], offsets[1]


def open_safetensors(file: RandomAccessFile) -> tuple[dict[str, Entry], dict[str, str]]:
    """(entries, __metadata__) of a safetensors file, its header checked byte by byte.

    Tensors read in their stored dtype are views of a memory map of the file (as the safetensors library
    gives them, and ~5x cheaper per tensor than asking it, which matters for models of 500 tensors).
    """
    header, metadata, data_start = read_header(file)
    entries: dict[str, Entry] = {}
    for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):  # file order
        shape = tuple(info["shape"])
        stride = tuple(math.prod(shape[i + 1 :]) for i in range(len(shape)))
        stored = StoredTensor(file, data_start + info["data_offsets"][0], shape, stride,
                              SAFETENSORS_DTYPES[info["dtype"]], f"tensor {name!r}")
        entries[name] = SafetensorsTensor(stored)
    return entries, metadata
