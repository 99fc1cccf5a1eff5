"""From whatever object a checkpoint holds to a flat {key: tensor} table in the OpenAI/OpenCLIP layout.

In order: a TorchScript module tree is flattened to dotted keys; a training checkpoint's wrapper
(`state_dict`, or one unambiguous `model_state_dict` / `model` / `module`) is opened, its scalar siblings
(epoch, name, step, ...) kept as metadata and the rest reported as ignored; a `module.` prefix is removed
when every key has it; OpenAI's root scalars (input_resolution, context_length, vocab_size) become
metadata ints; the Hugging Face CLIPModel layout is converted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from clipcore.checkpoint import hf
from clipcore.checkpoint.entries import Entry
from clipcore.checkpoint.torchscript import NON_PERSISTENT, flatten_script
from clipcore.checkpoint.unpickler import ScriptObject, TensorRef
from clipcore.errors import CheckpointError

WRAPPERS = ("state_dict", "model_state_dict", "model", "module")  # "state_dict" wins, as in OpenCLIP
MAX_WRAPPERS = 4
PREFIX = "module."  # added by DistributedDataParallel / DataParallel
ARCHIVE_SCALARS = ("input_resolution", "context_length", "vocab_size")
SCALARS = (int, float, str, bool, type(None))
# Metadata keys clipcore sets itself; a training checkpoint's scalar of the same name is only reported.
RESERVED = ("wrapper", "prefix", "ignored", "dropped", "layout", "unconverted", "safetensors", "torchscript_class",
            "files", "hf_config", "open_clip_config", *ARCHIVE_SCALARS)


def unwrap(root: Any, to_entry: Callable[[TensorRef], Entry], path: Path) -> tuple[dict, dict]:
    """(entries, metadata) for the object a pickle holds, before `clean`; entries keep the file's order."""
    metadata: dict[str, Any] = {}
    if isinstance(root, ScriptObject):
        metadata["torchscript_class"] = type(root).qualname
        tensors = flatten_script(root, to_entry, path)
    elif isinstance(root, Mapping):
        tensors = _state_dict(root, to_entry, metadata, path, "")
    else:
        raise CheckpointError(
            f"{path} holds a {type(root).__name__}, not a dict of tensors",
            fix="save the model's weights: torch.save(model.state_dict(), path)",
        )
    return tensors, metadata


def clean(tensors: dict[str, Entry], metadata: dict, fmt: str, path: Path) -> dict[str, Entry]:
    """The steps every format shares once it has a flat table: prefix, archive scalars, HF layout."""
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors", fix="pass a file that holds a model's weights")
    while all(key.startswith(PREFIX) and len(key) > len(PREFIX) for key in tensors):
        tensors = {key[len(PREFIX) :]: entry for key, entry in tensors.items()}
        metadata["prefix"] = metadata.get("prefix", "") + PREFIX
    for name in ARCHIVE_SCALARS:
        entry = tensors.get(name)
        if entry is not None and entry.shape in ((), (1,)) and not entry.dtype.is_floating_point:
            metadata[name] = int(entry.read(entry.dtype).item())
            del tensors[name]
    if fmt == "torchscript":
        dropped = [name for name in tensors if name.rpartition(".")[2] in NON_PERSISTENT]
        for name in dropped:
            del tensors[name]
        if dropped:
            metadata["dropped"] = dropped
    if hf.is_hf_layout(list(tensors)):
        tensors, unknown = hf.convert_hf(tensors, path)
        metadata["layout"] = "huggingface"
        if unknown:
            metadata["unconverted"] = unknown
    return tensors


def _is_tensor(value: Any) -> bool:
    return isinstance(value, (TensorRef, Entry))


def _holds_tensors(value: Any, depth: int = 0) -> bool:
    if not isinstance(value, Mapping) or depth > 2:
        return False
    return any(_is_tensor(v) or (k in WRAPPERS and _holds_tensors(v, depth + 1)) for k, v in value.items())


def _state_dict(mapping: Mapping, to_entry: Callable, metadata: dict, path: Path, where: str) -> dict[str, Entry]:
    if where.count(".") >= MAX_WRAPPERS:  # a pickle can make a dict that contains itself
        raise CheckpointError(f"{path}: the weights are wrapped more than {MAX_WRAPPERS} levels deep ({where})",
                              fix="save the state dict itself: torch.save(model.state_dict(), path)")
    has_tensors = any(_is_tensor(value) for value in mapping.values())
    wrapper = None
    if _holds_tensors(mapping.get("state_dict")):
        wrapper = "state_dict"
    elif not has_tensors:
        candidates = [key for key in WRAPPERS[1:] if _holds_tensors(mapping.get(key))]
        if len(candidates) > 1:
            raise CheckpointError(
                f"{path}: the weights could be under any of {[where + key for key in candidates]}",
                fix="save the one meant: torch.save(checkpoint[key], path)",
            )
        wrapper = candidates[0] if candidates else None
    if wrapper is None and not has_tensors:
        keys = [str(key) for key in list(mapping)[:8]]
        raise CheckpointError(f"{path} holds a dict without tensors (keys: {keys})",
                              fix="pass a file that holds a model's weights")
    ignored = metadata.setdefault("ignored", [])
    tensors: dict[str, Entry] = {}
    entries: dict[int, Entry] = {}  # one Entry per TensorRef, so a tensor saved twice is read the same way
    for key, value in mapping.items():
        if key == wrapper:
            continue
        if wrapper is None and _is_tensor(value) and isinstance(key, str):
            if isinstance(value, TensorRef):
                if id(value) not in entries:
                    entries[id(value)] = to_entry(value)
                value = entries[id(value)]
            tensors[key] = value
            continue
        ignored.append(f"{where}{key}")
        if isinstance(key, str) and isinstance(value, SCALARS) and key not in RESERVED:
            metadata[key] = value  # epoch, name, step, ... of a training checkpoint
    if not ignored:
        del metadata["ignored"]
    if wrapper is None:
        return tensors
    metadata["wrapper"] = metadata.get("wrapper", "") + ("." if "wrapper" in metadata else "") + wrapper
    return _state_dict(mapping[wrapper], to_entry, metadata, path, f"{where}{wrapper}.")
