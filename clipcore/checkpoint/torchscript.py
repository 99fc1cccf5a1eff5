"""TorchScript archives: the module tree from data.pkl, flattened into a state dict without running code.

The archive is read like a torch.save zip (see torchzip.py), with the restricted unpickler also standing in
for the `__torch__.*` module classes. Each module object records its attributes; a tensor's key is its
dotted attribute path from the root (`visual.conv1.weight`), as `torch.jit.load(...).state_dict()` would
name it. The code/ and constants/ records (the executable part) are never read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from clipcore.checkpoint.entries import Entry
from clipcore.checkpoint.files import damaged
from clipcore.checkpoint.unpickler import ScriptObject, TensorRef

MAX_DEPTH = 64  # CLIP module trees are about 8 deep; a cycle in a crafted pickle would be infinitely deep
# A ViT-bigG archive has a few thousand attributes; shared sub-objects could make a small pickle describe an
# exponentially large tree.
MAX_VISITS = 100_000

# Buffers that TorchScript saves but a model's state_dict() leaves out (matched on the last key component):
# OpenCLIP registers its causal text mask as a non-persistent buffer, and tracing keeps it. A mask is
# rebuilt from the context length, never loaded.
NON_PERSISTENT = ("attn_mask",)


def flatten_script(root: ScriptObject, to_entry: Callable[[TensorRef], Entry], path: Path) -> dict[str, Entry]:
    tensors: dict[str, Entry] = {}
    visits = 0

    def walk(obj: ScriptObject, prefix: str, depth: int) -> None:
        nonlocal visits
        if depth > MAX_DEPTH:
            raise damaged(path, f"its module tree is more than {MAX_DEPTH} levels deep at {prefix!r} (a cycle?)")
        for name, value in obj.attributes.items():
            visits += 1
            if visits > MAX_VISITS:
                raise damaged(path, f"its module tree has more than {MAX_VISITS} attributes")
            if not isinstance(name, str):
                continue
            if isinstance(value, TensorRef):
                tensors[prefix + name] = to_entry(value)
            elif isinstance(value, ScriptObject):
                walk(value, f"{prefix}{name}.", depth + 1)

    walk(root, "", 0)
    return tensors
