"""The building blocks both transformer towers share: norm, activations, attention, the residual block.

Parameter names follow OpenCLIP 3.3.0 (and through it OpenAI's CLIP), so state dicts load with strict=True:
attention keeps torch.nn.MultiheadAttention's names (`in_proj_weight`, `in_proj_bias`, `out_proj`) although
it is computed here with `F.scaled_dot_product_attention`. Modules are registered in the reference's order,
so `named_parameters()` lists the same names in the same order (optimizer state stays interchangeable).

Every module is built without touching its tensors (`torch.empty`): towers are built on the meta device and
then either given a checkpoint (`load_state_dict(..., assign=True)`) or initialised by `init_weights()`,
which reproduces the reference's initial distributions.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from spec.config import CUSTOM_BLOCK_FLAGS

# Scaled cosine attention clamps its per-head logit scale at log(100) (Swin V2, as OpenCLIP does).
COSINE_LOGIT_SCALE_MAX = math.log(100.0)
COSINE_LOGIT_SCALE_INIT = math.log(10.0)

NormFactory = Callable[[int], nn.Module]
ActFactory = Callable[[], nn.Module]


class NoInitOnMeta:
    """Mixin for torch's layers, which initialise their tensors in the constructor: on the meta device, where
    `build_model` builds every tower, there is nothing to initialise, and skipping it halves build time. On a
    real device `reset_parameters()` (which `init_weights()` calls) initialises as torch does."""

    def reset_parameters(self) -> None:
        first = next((t for t in (*self._parameters.values(), *self._buffers.values()) if t is not None), None)
        if first is None or not first.is_meta:
            super().reset_parameters()


class Linear(NoInitOnMeta, nn.Linear):
    """torch's Linear, not initialised on the meta device."""


class Conv2d(NoInitOnMeta, nn.Conv2d):
    """torch's Conv2d, not initialised on the meta device."""


class BatchNorm2d(NoInitOnMeta, nn.BatchNorm2d):
    """torch's BatchNorm2d, not initialised on the meta device."""


class LayerNorm(NoInitOnMeta, nn.LayerNorm):
    """LayerNorm whose statistics are always computed in float32; the result has the input's dtype.

    This is what OpenAI's LayerNorm and OpenCLIP's LayerNormFp32 do, so an fp16/bf16 model keeps fp32
    normalisation. For fp32 inputs and weights `.float()` returns the tensor itself: no copy.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """OpenAI's sigmoid approximation of GELU, which its released models were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerScale(nn.Module):
    """Per-channel residual scaling (CaiT); `gamma` starts at `init_value`."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma

    def init_weights(self) -> None:
        nn.init.constant_(self.gamma, self.init_value)


def norm_factory(norm_kwargs: Mapping[str, Any] | None) -> NormFactory:
    """LayerNorm with the config's extra arguments (e.g. eps=1e-6), as OpenCLIP's `norm_kwargs`."""
    return partial(LayerNorm, **norm_kwargs) if norm_kwargs else LayerNorm


def act_factory(quick_gelu: bool, act_kwargs: Mapping[str, Any] | None) -> ActFactory:
    """QuickGELU, or torch's GELU with the config's `act_kwargs` (e.g. approximate='tanh').

    (spec refuses act_kwargs with quick_gelu: QuickGELU takes no options.)
    """
    return QuickGELU if quick_gelu else partial(nn.GELU, **(act_kwargs or {}))


def uses_custom_block(tower: Any) -> bool:
    """OpenCLIP's choice of block: an explicit `block_type` wins, else any custom feature selects 'custom'.

    (So block_type='default' with, say, qk_norm=True builds the default block and ignores the flag.)
    """
    if tower.block_type is not None:
        return tower.block_type == "custom"
    return any(getattr(tower, flag) for flag in CUSTOM_BLOCK_FLAGS)


def init_linear_default(linear: nn.Linear | nn.Conv2d) -> None:
    """torch's own initialisation of a Linear/Conv layer (what the reference leaves untouched)."""
    linear.reset_parameters()


def init_norm(module: nn.Module) -> None:
    """Identity modules have nothing; LayerNorm/BatchNorm get ones and zeros (and fresh running stats)."""
    if isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        module.reset_parameters()


def optional_parameter(present: bool, *shape: int) -> nn.Parameter | None:
    return nn.Parameter(torch.empty(*shape)) if present else None


class Attention(nn.Module):
    """Multi-head attention with torch.nn.MultiheadAttention's parameter names, computed through SDPA.

    Self-attention keeps one fused `in_proj_weight` (3*dim, dim). With `kv_dim != dim` (the attentional
    pooler reads the tower's tokens at another width) torch keeps three separate `q/k/v_proj_weight`s instead,
    and so do we. The optional features are those of OpenCLIP's custom block: LayerNorm of queries and keys
    per head (`qk_norm`), scaled cosine attention with a learned per-head temperature, a learned per-head
    output scale, and a LayerNorm of the merged heads before the output projection.

    `mha_init` picks which reference initialisation `init_weights` reproduces: torch's MultiheadAttention
    (xavier-uniform in-projection, zero biases) or OpenCLIP's custom Attention (normal in-projection scaled by
    head_dim^-0.5, torch's default out-projection).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        kv_dim: int | None = None,
        qk_norm: bool = False,
        scaled_cosine: bool = False,
        scale_heads: bool = False,
        inner_norm: bool = False,
        norm: NormFactory = LayerNorm,
        mha_init: bool = True,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.mha_init = mha_init
        self.logit_scale_max = COSINE_LOGIT_SCALE_MAX
        self.fused = kv_dim is None or kv_dim == dim
        kv_dim = dim if kv_dim is None else kv_dim
        # Like torch, the parameters of the unused form exist as None (and are not in the state dict).
        self.in_proj_weight = optional_parameter(self.fused, 3 * dim, dim)
        self.q_proj_weight = optional_parameter(not self.fused, dim, dim)
        self.k_proj_weight = optional_parameter(not self.fused, dim, kv_dim)
        self.v_proj_weight = optional_parameter(not self.fused, dim, kv_dim)
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.logit_scale = optional_parameter(scaled_cosine, heads, 1, 1)
        self.head_scale = optional_parameter(scale_heads, heads, 1, 1)
        self.ln_q = norm(self.head_dim) if qk_norm else nn.Identity()
        self.ln_k = norm(self.head_dim) if qk_norm else nn.Identity()
        self.ln_inner = norm(dim) if inner_norm else nn.Identity()
        self.out_proj = Linear(dim, dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # (B, L, dim) -> (B, heads, L, head_dim)
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(-3, -2)

    def project_qkv(
        self, x: torch.Tensor, kv: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries from `x`, keys and values from `kv` (default: `x`), each (B, heads, L, head_dim)."""
        if self.in_proj_weight is not None and kv is None:
            q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            kv = x if kv is None else kv
            if self.in_proj_weight is not None:
                w_q, w_k, w_v = self.in_proj_weight.chunk(3)
            else:
                assert self.q_proj_weight is not None and self.k_proj_weight is not None
                assert self.v_proj_weight is not None
                w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
            q, k, v = F.linear(x, w_q, b_q), F.linear(kv, w_k, b_k), F.linear(kv, w_v, b_v)
        return self._split_heads(q), self._split_heads(k), self._split_heads(v)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Heads in, merged and projected output out. `attn_mask` is boolean (True = may attend)."""
        if self.logit_scale is None:
            x = F.scaled_dot_product_attention(
                self.ln_q(q), self.ln_k(k), v, attn_mask=attn_mask, is_causal=is_causal
            )
        else:
            # Scaled cosine attention: SDPA cannot take the unit-norm logits, so the scores are explicit.
            # (OpenCLIP 3.3.0 calls torch.bmm on 4-d tensors here and fails; this is the computation it means.)
            scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)
            scores = scores * torch.clamp(self.logit_scale, max=self.logit_scale_max).exp()
            if is_causal:
                n_q, n_k = scores.shape[-2], scores.shape[-1]
                attn_mask = torch.ones(n_q, n_k, dtype=torch.bool, device=scores.device).tril()
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            x = scores.softmax(dim=-1) @ v
        if self.head_scale is not None:
            x = x * self.head_scale
        x = x.transpose(-3, -2).flatten(-2)  # (B, L, dim)
        return self.out_proj(self.ln_inner(x))

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        q, k, v = self.project_qkv(x)
        return self.attend(q, k, v, attn_mask, is_causal)

    def init_weights(self) -> None:
        if self.mha_init:
            for w in (
                [self.in_proj_weight]
                if self.fused
                else [self.q_proj_weight, self.k_proj_weight, self.v_proj_weight]
            ):
                nn.init.xavier_uniform_(w)
            init_linear_default(self.out_proj)
            nn.init.zeros_(self.out_proj.bias)
        else:
            nn.init.normal_(self.in_proj_weight, std=self.head_dim**-0.5)
            init_linear_default(self.out_proj)
        nn.init.zeros_(self.in_proj_bias)
        if self.logit_scale is not None:
            nn.init.constant_(self.logit_scale, COSINE_LOGIT_SCALE_INIT)
        if self.head_scale is not None:
            nn.init.ones_(self.head_scale)
        for ln in (self.ln_q, self.ln_k, self.ln_inner):
            init_norm(ln)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)), each optionally layer-scaled.

    With `custom=True` this is OpenCLIP's CustomResidualAttentionBlock: the optional norms after attention
    (`ln_attn`) and inside the MLP (`mlp.ln`) and the attention options above. Without them the parameters
    are exactly those of the default block.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_width: int,
        *,
        act: ActFactory,
        norm: NormFactory,
        ls_init_value: float | None = None,
        custom: bool = False,
        qk_norm: bool = False,
        scaled_cosine_attn: bool = False,
        scale_heads: bool = False,
        scale_attn_inner: bool = False,
        scale_attn: bool = False,
        scale_fc: bool = False,
    ) -> None:
        super().__init__()
        layer_scale = (lambda: LayerScale(width, ls_init_value)) if ls_init_value is not None else nn.Identity
        self.ln_1 = norm(width)
        self.attn = Attention(
            width,
            heads,
            qk_norm=custom and qk_norm,
            scaled_cosine=custom and scaled_cosine_attn,
            scale_heads=custom and scale_heads,
            inner_norm=custom and scale_attn_inner,
            norm=norm,
            mha_init=not custom,
        )
        self.ln_attn = norm(width) if custom and scale_attn else nn.Identity()
        self.ls_1 = layer_scale()
        self.ln_2 = norm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", Linear(width, mlp_width)),
                    ("gelu", act()),
                    ("ln", norm(mlp_width) if custom and scale_fc else nn.Identity()),
                    ("c_proj", Linear(mlp_width, width)),
                ]
            )
        )
        self.ls_2 = layer_scale()

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        x = x + self.ls_1(self.ln_attn(self.attn(self.ln_1(x), attn_mask, is_causal)))
        return x + self.ls_2(self.mlp(self.ln_2(x)))

    def init_weights(self) -> None:
        self.attn.init_weights()
        for module in (self.ln_1, self.ln_attn, self.ln_2, self.mlp.ln):
            init_norm(module)
        init_linear_default(self.mlp.c_fc)
        init_linear_default(self.mlp.c_proj)
        for ls in (self.ls_1, self.ls_2):
            if isinstance(ls, LayerScale):
                ls.init_weights()


class Transformer(nn.Module):
    """A stack of residual attention blocks (`resblocks`), batch-first."""

    def __init__(self, tower: Any, width: int, heads: int, act: ActFactory, norm: NormFactory) -> None:
        """`tower` is a VisionConfig or TextConfig: layers, MLP width, layer scale and block options."""
        super().__init__()
        self.width = width
        self.layers = tower.layers
        self.grad_checkpointing = False
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(
                width,
                heads,
                tower.mlp_width,
                act=act,
                norm=norm,
                ls_init_value=tower.ls_init_value,
                custom=uses_custom_block(tower),
                qk_norm=tower.qk_norm,
                scaled_cosine_attn=tower.scaled_cosine_attn,
                scale_heads=tower.scale_heads,
                scale_attn_inner=tower.scale_attn_inner,
                scale_attn=tower.scale_attn,
                scale_fc=tower.scale_fc,
            )
            for _ in range(tower.layers)
        )

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(block, x, attn_mask, is_causal, use_reentrant=False)
            else:
                x = block(x, attn_mask, is_causal)
        return x

    def init_weights(self) -> None:
        for block in self.resblocks:
            block.init_weights()


class AttentionalPooler(nn.Module):
    """`n_queries` learned queries attend over the tower's tokens (OpenCLIP's CoCa-style pooler).

    It works at `d_model` (the joint embedding width) while reading tokens of width `context_dim`; its two
    LayerNorms are plain ones, without the tower's norm options, as in the reference.
    """

    def __init__(self, d_model: int, context_dim: int, heads: int, n_queries: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.empty(n_queries, d_model))
        self.attn = Attention(d_model, heads, kv_dim=context_dim)
        self.ln_q = LayerNorm(d_model)
        self.ln_k = LayerNorm(context_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The queries are the same for every image: project them once, then broadcast over the batch.
        q, k, v = self.attn.project_qkv(self.ln_q(self.query).unsqueeze(0), self.ln_k(x))
        return self.attn.attend(q.expand(x.shape[0], -1, -1, -1), k, v)

    def init_weights(self) -> None:
        nn.init.normal_(self.query, std=1.0)
        self.attn.init_weights()
        init_norm(self.ln_q)
        init_norm(self.ln_k)


class PatchDropout(nn.Module):
    """While training, keep the class token and a random subset of patch tokens (FLIP); identity in eval."""

    def __init__(self, prob: float) -> None:
        super().__init__()
        self.prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.prob == 0.0:
            return x
        cls_token, patches = x[:, :1], x[:, 1:]
        batch, n = patches.shape[0], patches.shape[1]
        keep = max(1, int(n * (1.0 - self.prob)))
        kept = torch.randn(batch, n, device=x.device).topk(keep, dim=-1).indices
        patches = patches[torch.arange(batch, device=x.device)[:, None], kept]
        return torch.cat([cls_token, patches], dim=1)


def unfreeze(parts: list) -> None:
    """Make every parameter of these modules and parameters trainable again (the towers' `lock` groups)."""
    for part in parts:
        part.requires_grad_(True)  # a Parameter, or every parameter of a module
