"""Which format a checkpoint is, from its bytes (never its extension), and which file of a folder to read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from clipcore.checkpoint.files import damaged
from clipcore.checkpoint.legacy import looks_legacy
from clipcore.checkpoint.torchzip import central_directory, zip_kind
from clipcore.errors import CheckpointError

FORMATS = ("safetensors", "torch-zip", "torchscript", "torch-legacy")
FORMATS_FIX = (
    "clipcore reads safetensors, torch.save files (zip and legacy), OpenAI TorchScript archives, OpenCLIP "
    "training checkpoints and Hugging Face CLIP folders"
)
# Weights files of a model folder, most preferred first: OpenCLIP's own layout needs no conversion.
WEIGHT_FILES = ("open_clip_model.safetensors", "model.safetensors", "open_clip_pytorch_model.bin",
                "pytorch_model.bin")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
MAX_JSON_BYTES = 16 << 20  # config.json and shard indexes are kilobytes
# Signatures of files that are not checkpoints, to say what the file is instead.
_OTHER_FILES = {
    b"\x1f\x8b": "a gzip file (decompress it first)",
    b"\x93NUMPY": "a numpy .npy array",
    b"\x89HDF": "an HDF5 (Keras) file",
    b"PK\x05\x06": "an empty zip archive",
}


def as_path(path: str | os.PathLike) -> Path:
    try:
        return Path(os.fspath(path))
    except TypeError:
        raise CheckpointError(f"{path!r} is not a path", fix="pass a str or pathlib.Path") from None


def weights_in_folder(folder: Path) -> Path:
    """The weights file (or shard index) of a model folder such as a Hugging Face snapshot."""
    for name in (*WEIGHT_FILES, *SHARD_INDEXES):
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(
        f"{folder} is a folder without a weights file (looked for {', '.join(WEIGHT_FILES + SHARD_INDEXES)})",
        fix="pass the checkpoint file itself, or a folder saved by transformers or OpenCLIP",
    )


def detect_format(path: str | os.PathLike) -> str:
    """'safetensors', 'torch-zip', 'torchscript' or 'torch-legacy', from the file's first bytes.

    A folder answers for the weights file it holds (for a shard index, its first shard).
    """
    path = as_path(path)
    if path.is_dir():
        weights = weights_in_folder(path)
        if weights.name in SHARD_INDEXES:
            return detect_format(shard_files(weights)[0])
        return detect_format(weights)
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}",
                              fix="check that the path names a readable file") from None
    return _format_of(path, head, size)


def _format_of(path: Path, head: bytes, size: int) -> str:
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes)", fix="download or save the checkpoint again")
    if head.startswith(b"PK\x03\x04"):
        infos, _ = central_directory(path)
        kind = zip_kind([info.filename for info in infos])
        if kind is None:
            names = [info.filename for info in infos[:5]]
            raise CheckpointError(f"{path} is a zip archive but not a PyTorch checkpoint (members: {names})",
                                  fix=FORMATS_FIX)
        return kind
    if looks_legacy(head):
        return "torch-legacy"
    if size >= 9 and head[8:9] == b"{":  # 8-byte header length, then the JSON header
        return "safetensors"
    if head[257:262] == b"ustar":
        raise CheckpointError(f"{path} is a tar file: the torch.save format of torch 0.3 and older, "
                              "which clipcore does not read", fix="load it with that torch and re-save it")
    what = next((text for magic, text in _OTHER_FILES.items() if head.startswith(magic)), "no checkpoint format")
    raise CheckpointError(f"{path} is {what} (first bytes {head[:16]!r})", fix=FORMATS_FIX)


def shard_files(index: Path) -> list[Path]:
    """The shard files a `*.index.json` names, in first-use order; names must stay inside the folder."""
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise damaged(index, "it has no weight_map of tensor name -> shard file")
    names = list(dict.fromkeys(weight_map.values()))
    for name in names:
        if not isinstance(name, str) or Path(name).name != name or name in (".", "..") or name.startswith("."):
            raise damaged(index, f"it names shard {name!r}, which is not a plain file name in its folder")
    return [index.parent / name for name in names]


def read_json(path: Path) -> dict[str, Any]:
    """A small JSON object file of a model folder (config, shard index)."""
    try:
        size = path.stat().st_size
        text = path.read_bytes() if size <= MAX_JSON_BYTES else b""
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}", fix="check the folder") from None
    if size > MAX_JSON_BYTES:
        raise damaged(path, f"it is larger than the {MAX_JSON_BYTES} bytes a config needs")
    try:
        value = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise damaged(path, f"it is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise damaged(path, "it is not a JSON object")
    return value
