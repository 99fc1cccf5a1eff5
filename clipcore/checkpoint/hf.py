"""Hugging Face `transformers` CLIPModel keys -> OpenAI/OpenCLIP keys, lazily.

HF keeps separate q/k/v projections where OpenAI has one packed `in_proj`, stores the two output
projections as Linear weights (the transpose of OpenAI's matrices), and names layers differently. The
conversion is a new table of entries: renamed ones are the same entries, packed and transposed ones are
derived entries whose shapes are known at once and whose data is read and combined only on get().
Only the ViT CLIP layout exists in transformers; there is no HF ModifiedResNet to convert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from clipcore.checkpoint.entries import Entry
from clipcore.checkpoint.files import damaged

# Whole-key renames; None drops the key (position_ids are a constant arange, not a weight).
_RENAMES = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.embeddings.position_ids": None,
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.embeddings.position_ids": None,
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",  # sic: HF's spelling
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "logit_scale": "logit_scale",
}
# Linear weights [out, in] that OpenAI keeps as plain matrices [in, out] used as `x @ proj`.
_TRANSPOSED = {"visual_projection.weight": "visual.proj", "text_projection.weight": "text_projection"}
_TOWERS = {"text_model": "transformer.resblocks", "vision_model": "visual.transformer.resblocks"}
_LAYER = re.compile(r"(text_model|vision_model)\.encoder\.layers\.(\d+)\.(.+)")
_LAYER_PARTS = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_QKV = re.compile(r"self_attn\.([qkv])_proj\.(weight|bias)")
MARKERS = ("text_model.embeddings.token_embedding.weight", "vision_model.embeddings.patch_embedding.weight")


@dataclass(eq=False)
class Packed(Entry):
    """q, k and v projections stacked along dim 0 into OpenAI's in_proj, built in the requested dtype."""

    parts: tuple[Entry, Entry, Entry]
    shape: tuple[int, ...]
    dtype: torch.dtype

    def read_into(self, out: torch.Tensor) -> None:
        row = 0
        for part in self.parts:
            rows = part.shape[0]
            part.read_into(out[row : row + rows])
            row += rows


@dataclass(eq=False)
class Transposed(Entry):
    source: Entry

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.source.shape))

    @property
    def dtype(self) -> torch.dtype:
        return self.source.dtype

    def read_into(self, out: torch.Tensor) -> None:
        self.source.read_into(out.t())  # a transposed view of the result: one copy, no temporary


def is_hf_layout(keys: list[str]) -> bool:
    return any(key in MARKERS for key in keys)


def convert_hf(entries: dict[str, Entry], path: object) -> tuple[dict[str, Entry], list[str]]:
    """The OpenAI-layout table, and the HF keys that have no OpenAI name (kept unchanged)."""
    out: dict[str, Entry | None] = {}
    qkv: dict[str, dict[str, Entry]] = {}  # in_proj name -> {"q": entry, "k": ..., "v": ...}
    unknown: list[str] = []
    for key, entry in entries.items():
        if key in _RENAMES:
            if _RENAMES[key] is not None:
                out[_RENAMES[key]] = entry
            continue
        if key in _TRANSPOSED:
            if len(entry.shape) != 2:
                raise damaged(path, f"{key} has shape {entry.shape}, not a 2-D projection matrix")
            out[_TRANSPOSED[key]] = Transposed(entry)
            continue
        layer = _LAYER.fullmatch(key)
        if layer:
            tower, index, rest = layer.groups()
            prefix = f"{_TOWERS[tower]}.{index}."
            qkv_match = _QKV.fullmatch(rest)
            if qkv_match:
                which, kind = qkv_match.groups()
                name = f"{prefix}attn.in_proj_{kind}"
                out.setdefault(name, None)  # keeps the packed tensor where its first part was
                qkv.setdefault(name, {})[which] = entry
                continue
            module, _, param = rest.rpartition(".")
            if module in _LAYER_PARTS:
                out[prefix + _LAYER_PARTS[module] + "." + param] = entry
                continue
        unknown.append(key)
        out[key] = entry
    for name, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise damaged(path, f"{name} needs q, k and v projections but the file has only {sorted(parts)}")
        q, k, v = parts["q"], parts["k"], parts["v"]
        if not (q.shape == k.shape == v.shape and q.dtype == k.dtype == v.dtype and len(q.shape) in (1, 2)):
            raise damaged(path, f"the q/k/v projections for {name} differ in shape or dtype "
                                f"({q.shape}, {k.shape}, {v.shape})")
        out[name] = Packed((q, k, v), (3 * q.shape[0], *q.shape[1:]), q.dtype)
    return out, unknown
