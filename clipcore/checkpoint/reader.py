"""`open_checkpoint`: one handle over any supported checkpoint, with tensors read one at a time."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from clipcore.checkpoint.detect import SHARD_INDEXES, as_path, detect_format, read_json, shard_files, weights_in_folder
from clipcore.checkpoint.entries import Entry
from clipcore.checkpoint.files import RandomAccessFile, damaged
from clipcore.checkpoint.legacy import open_legacy
from clipcore.checkpoint.safetensors import open_safetensors
from clipcore.checkpoint.torchzip import open_torch_zip
from clipcore.checkpoint.unwrap import clean, unwrap
from clipcore.errors import CheckpointError


class Checkpoint:
    """An open checkpoint: names, shapes and dtypes at once; each tensor read only when asked for.

    `get(key, dtype)` reads one tensor from the file (a memory map for safetensors in their stored dtype)
    and returns a new tensor the caller owns, so iterating key by key and dropping each tensor keeps memory
    at one tensor at a time. `dtype` converts floating-point tensors only; integer and bool tensors
    (token ids, BatchNorm's num_batches_tracked) keep their dtype, as nn.Module.to(dtype) does.
    """

    def __init__(self, path: Path, format: str, entries: dict[str, Entry], metadata: dict[str, Any],
                 closers: list[Callable[[], None]]) -> None:
        self.path, self.format, self.metadata = path, format, metadata
        self._entries, self._closers, self._closed = entries, closers, False

    def keys(self) -> list[str]:
        return list(self._entries)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape, from the file's header or pickle alone (no tensor data is read)."""
        return {key: tuple(entry.shape) for key, entry in self._entries.items()}

    def dtypes(self) -> dict[str, torch.dtype]:
        return {key: entry.dtype for key, entry in self._entries.items()}

    def get(self, key: str, dtype: torch.dtype | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """The tensor called `key`, read now; floating-point tensors converted to `dtype` if given.

        With `out` (a CPU tensor of the key's shape and of dtype `dtype_of(key, dtype)`), the values are
        written into it and it is returned.
        """
        entry = self._entry(key)
        if self._closed:
            raise CheckpointError(f"{self.path}: the checkpoint was closed", fix="read tensors before close()")
        dtype = _target_dtype(entry.dtype, dtype)
        if out is None:
            return entry.read(dtype)
        if tuple(out.shape) != tuple(entry.shape) or out.dtype != dtype or out.device.type != "cpu":
            raise CheckpointError(
                f"out= for {key!r} is a {out.dtype} tensor of shape {tuple(out.shape)} on {out.device}",
                fix=f"pass a CPU tensor of shape {tuple(entry.shape)} and dtype {dtype}",
            )
        entry.read_into(out)
        return out

    def dtype_of(self, key: str, dtype: torch.dtype | None = None) -> torch.dtype:
        """The dtype `get(key, dtype)` returns (integer tensors keep theirs)."""
        return _target_dtype(self._entry(key).dtype, dtype)

    def maps(self, key: str, dtype: torch.dtype | None = None) -> bool:
        """Whether `get(key, dtype)` is a view of the file's memory map, i.e. needs no new memory."""
        entry = self._entry(key)
        return entry.maps(_target_dtype(entry.dtype, dtype))

    def _entry(self, key: str) -> Entry:
        entry = self._entries.get(key) if isinstance(key, str) else None
        if entry is None:
            close = difflib.get_close_matches(str(key), self._entries, n=3)
            raise CheckpointError(f"{self.path} has no tensor called {key!r}"
                                  + (f" (close: {', '.join(close)})" if close else ""),
                                  fix="see .keys() for the names this checkpoint holds")
        return entry

    def to_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        return {key: self.get(key, dtype) for key in self._entries}

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def close(self) -> None:
        """Release the file handles. Tensors already returned stay valid (mapped ones keep their map)."""
        if not self._closed:
            self._closed = True
            for closer in self._closers:
                closer()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self)} tensors"
        return f"Checkpoint({str(self.path)!r}, format={self.format!r}, {state})"


def _target_dtype(stored: torch.dtype, wanted: torch.dtype | None) -> torch.dtype:
    if wanted is None:
        return stored
    if not isinstance(wanted, torch.dtype) or not wanted.is_floating_point:
        raise CheckpointError(f"dtype={wanted!r} is not a floating-point torch.dtype",
                              fix="pass e.g. torch.float32, torch.float16 or torch.bfloat16, or None")
    return wanted if stored.is_floating_point else stored


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open a checkpoint file (or model folder) whatever its format; nothing in it is executed."""
    path = as_path(path)
    if path.is_dir():
        fmt, entries, metadata, closers = _open_folder(path)
    else:
        fmt, entries, metadata, closers = _open_file(path)
    try:
        entries = clean(entries, metadata, fmt, path)
    except BaseException:
        _close_all(closers)
        raise
    return Checkpoint(path, fmt, entries, metadata, closers)


def read_state_dict(path: str | os.PathLike, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, floating-point ones converted to `dtype` if given."""
    with open_checkpoint(path) as checkpoint:
        return checkpoint.to_state_dict(dtype)


Opened = tuple[str, dict[str, Entry], dict[str, Any], list[Callable[[], None]]]


def _close_all(closers: list[Callable[[], None]]) -> None:
    for closer in closers:
        closer()


def _open_file(path: Path) -> Opened:
    """(format, entries before the shared clean-up, metadata, closers) of one file."""
    fmt = detect_format(path)
    file = RandomAccessFile(path)
    try:
        if fmt == "safetensors":
            entries, header_metadata = open_safetensors(file)
            metadata = {"safetensors": header_metadata} if header_metadata else {}
            return fmt, entries, metadata, [file.close]
        extras: dict = {}
        if fmt == "torch-legacy":
            root, to_entry = open_legacy(file)
        else:
            root, to_entry, extras = open_torch_zip(file, script=fmt == "torchscript")
        entries, metadata = unwrap(root, to_entry, path)
        return fmt, entries, {**metadata, **extras}, [file.close]
    except BaseException:
        file.close()
        raise


def _open_folder(folder: Path) -> Opened:
    """A model folder: its weights file, or every shard of its index, plus its JSON configs as metadata."""
    weights = weights_in_folder(folder)
    files = shard_files(weights) if weights.name in SHARD_INDEXES else [weights]
    formats, entries, metadata, closers = set(), {}, {}, []
    try:
        for file in files:
            fmt, file_entries, file_metadata, file_closers = _open_file(file)
            closers += file_closers
            formats.add(fmt)
            duplicate = next((key for key in file_entries if key in entries), None)
            if duplicate is not None:
                raise damaged(folder, f"tensor {duplicate!r} is in more than one shard")
            entries.update(file_entries)
            for key, value in file_metadata.items():
                metadata.setdefault(key, value)
        if len(formats) > 1:
            raise damaged(folder, f"its shards mix formats {sorted(formats)}")
        metadata["files"] = [file.name for file in files]
        for name, key in (("config.json", "hf_config"), ("open_clip_config.json", "open_clip_config")):
            if (folder / name).is_file():
                metadata[key] = read_json(folder / name)
    except BaseException:
        _close_all(closers)
        raise
    return formats.pop(), entries, metadata, closers
