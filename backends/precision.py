"""Which tensors of a model run in half precision: OpenAI's mixed-precision layout, as a per-key dtype rule.

OpenAI's `convert_weights` puts in float16 the weights and biases of convolutions and linear layers, the
attention in-projections, and the `text_projection` / `proj` matrices; it keeps in float32 every LayerNorm
and BatchNorm tensor, the embeddings (token, positional, class) and the logit scale. The LayerNorms compute
in float32 and hand back the input's dtype, so activations stay in half precision between them.

`half_rule(config, dtype)` gives that layout for any clipcore model: a tensor stays float32 when it belongs
to a norm or an embedding table, or is one of the embedding/temperature parameters the towers cast
themselves; every other floating-point tensor (OpenCLIP's extras too: layer-scale gammas, pooler queries,
per-head scales) takes `dtype`, because the towers multiply it into half-precision activations. On the
nine OpenAI architectures this is exactly `convert_weights` (checked against it by the conformance suite).
"""

from __future__ import annotations

import torch
from torch import nn

from clipcore.assemble import DtypeRule
from clipcore.errors import ConfigError
from clipcore.towers import build_model
from spec import ClipConfig

__all__ = ["HALF_DTYPES", "half_keys", "half_rule"]

HALF_DTYPES = (torch.float16, torch.bfloat16)

# Modules whose own tensors stay float32: normalisation statistics and lookup tables.
FP32_MODULES = (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm, nn.Embedding)
# Parameters that stay float32 wherever they sit: the towers cast them to the activations' dtype on use.
FP32_PARAMETERS = ("positional_embedding", "class_embedding", "cls_emb")
# Parameters of the root model that stay float32: the logits' temperature and bias.
FP32_ROOT_PARAMETERS = ("logit_scale", "logit_bias")


def half_keys(config: ClipConfig) -> frozenset[str]:
    """The state-dict keys of `config`'s model that OpenAI's layout stores in half precision."""
    model = build_model(config, device="meta")
    keys = set()
    for prefix, module in model.named_modules():
        if isinstance(module, FP32_MODULES):
            continue
        for name, _ in module.named_parameters(recurse=False):
            if name in FP32_PARAMETERS or (prefix == "" and name in FP32_ROOT_PARAMETERS):
                continue
            keys.add(f"{prefix}.{name}" if prefix else name)
    return frozenset(keys)


def half_rule(config: ClipConfig, dtype: torch.dtype = torch.float16) -> DtypeRule:
    """A per-key dtype rule for `clipcore.assemble`: `dtype` for `half_keys(config)`, float32 otherwise."""
    if dtype not in HALF_DTYPES:
        raise ConfigError(f"half precision means float16 or bfloat16, got {dtype}")
    half = half_keys(config)
    return lambda key: dtype if key in half else torch.float32
