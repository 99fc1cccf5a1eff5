"""The vision transformer (OpenAI's ViT image tower, with OpenCLIP's options).

image -> patches (a strided conv) -> [class token] + patch tokens + positions -> LayerNorm -> transformer
-> pool (class token, token average, or an attentional pooler) -> LayerNorm -> projection to embed_dim.
"""

import torch
from torch import nn

from clipcore.errors import ConfigError, UnsupportedModelError
from clipcore.towers.layers import (
    AttentionalPooler,
    Conv2d,
    PatchDropout,
    Transformer,
    act_factory,
    init_linear_default,
    init_norm,
    norm_factory,
    unfreeze,
)
from spec.config import VisionConfig


def sincos_2d_table(width: int, grid: int) -> torch.Tensor:
    """The fixed 2-d sine-cosine positions (MAE / MoCo v3), with a zero row in front for the class token.

    Patch t = row * grid + col: the first half of the channels encodes the column, the second half the row,
    each half as [sin(pos * omega), cos(pos * omega)] with omega = 10000^(-i / (width / 4)). Computed in
    float64 like the reference's numpy code, then rounded once to float32.
    """
    quarter = width // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid, dtype=torch.float64)
    col, row = coords.repeat(grid), coords.repeat_interleave(grid)

    def embed(pos: torch.Tensor) -> torch.Tensor:
        angles = pos[:, None] * omega[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([embed(col), embed(row)], dim=1)
    return torch.cat([torch.zeros(1, width, dtype=torch.float64), table]).float()


class VisionTransformer(nn.Module):
    """ViT image tower; parameter names and order as OpenCLIP's `VisionTransformer`."""

    output_tokens: torch.jit.Final[bool]

    def __init__(self, cfg: VisionConfig, embed_dim: int, quick_gelu: bool) -> None:
        super().__init__()
        act = act_factory(quick_gelu, cfg.act_kwargs)
        norm = norm_factory(cfg.norm_kwargs)
        width, (grid_h, grid_w) = cfg.width, cfg.grid_size
        self.image_size = cfg.image_size_hw
        self.patch_size = (cfg.patch_size, cfg.patch_size)
        self.grid_size = cfg.grid_size
        self.width = width
        self.output_tokens = cfg.output_tokens
        self.final_ln_after_pool = cfg.final_ln_after_pool
        self.sincos_positions = cfg.pos_embed_type == "sin_cos_2d"
        if self.sincos_positions and width % 4:
            raise ConfigError(
                f"vision.pos_embed_type = 'sin_cos_2d' needs a width divisible by 4, got {width}",
                fix="use a width that is a multiple of 4 or pos_embed_type='learnable'",
            )
        # The CoCa forms ('parallel', 'cascade') pool with two attentional poolers and no global pool.
        self.attn_pool_type = cfg.attentional_pool if isinstance(cfg.attentional_pool, str) else ""
        self.pool_type = "none" if self.attn_pool_type else cfg.pool_type
        if self.attn_pool_type and width != embed_dim:
            raise UnsupportedModelError(
                f"vision.attentional_pool = {cfg.attentional_pool!r} with vision.width = {width} != embed_dim = "
                f"{embed_dim}: OpenCLIP's (untested) form normalises the tower's tokens with a LayerNorm of the "
                "embedding width, so this model cannot run in the reference either",
                fix="use attentional_pool=True, or a width equal to embed_dim",
            )

        self.conv1 = Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        # The sine-cosine table is fixed, but the reference keeps it as a (frozen) parameter in the state dict.
        self.positional_embedding = nn.Parameter(
            torch.empty(grid_h * grid_w + 1, width), requires_grad=not self.sincos_positions
        )
        self.patch_dropout = PatchDropout(cfg.patch_dropout) if cfg.patch_dropout > 0 else nn.Identity()
        self.ln_pre = nn.Identity() if cfg.no_ln_pre else norm(width)
        self.transformer = Transformer(cfg, width, cfg.heads, act, norm)

        self.attn_pool: AttentionalPooler | None = None
        self.attn_pool_contrastive: AttentionalPooler | None = None
        pool_dim = width
        if cfg.attentional_pool:
            heads, queries = cfg.attn_pooler_heads, cfg.attn_pooler_queries
            self.attn_pool = AttentionalPooler(embed_dim, width, heads, queries)
            if self.attn_pool_type:
                self.attn_pool_contrastive = AttentionalPooler(embed_dim, width, heads, 1)
            pool_dim = embed_dim
        self.ln_post = norm(pool_dim)
        self.proj = nn.Parameter(torch.empty(pool_dim, embed_dim))

    def _global_pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pool_type == "tok":
            return x[:, 0], x[:, 1:]
        if self.pool_type == "avg":
            return x[:, 1:].mean(dim=1), x[:, 1:]
        return x, x

    def _pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled, tokens) from the transformer's output, with ln_post where the reference puts it."""
        if self.attn_pool is not None:
            if self.attn_pool_contrastive is not None:
                x = self.ln_post(x)
                tokens = self.attn_pool(x)
                pooled = self.attn_pool_contrastive(x if self.attn_pool_type == "parallel" else tokens)
                return pooled, tokens
            return self._global_pool(self.ln_post(self.attn_pool(x)))
        if self.final_ln_after_pool:
            pooled, tokens = self._global_pool(x)
            return self.ln_post(pooled), tokens
        return self._global_pool(self.ln_post(x))

    def forward_with_tokens(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected pooled features, unprojected tokens)."""
        x = self.conv1(image).flatten(2).transpose(1, 2)  # (B, grid_h * grid_w, width)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(self.patch_dropout(x))
        x = self.transformer(x)
        pooled, tokens = self._pool(x)
        return pooled @ self.proj, tokens

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The image features; with `output_tokens` (CoCa) also the tokens, as the reference returns them."""
        pooled, tokens = self.forward_with_tokens(image)
        if self.output_tokens:
            return pooled, tokens
        return pooled

    def lock(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """Freeze the tower (LiT), then make the last `unlocked_groups` of OpenCLIP's groups trainable again:
        [conv1, class token, positions, ln_pre], each block but the last, [last block, ln_post], proj.

        As in the reference, the attentional poolers belong to no group (they stay frozen), and a ViT has no
        BatchNorm, so `freeze_bn_stats` changes nothing.
        """
        self.requires_grad_(False)
        if unlocked_groups == 0:
            return
        blocks = list(self.transformer.resblocks)
        groups = [
            [self.conv1, self.class_embedding, self.positional_embedding, self.ln_pre],
            *([block] for block in blocks[:-1]),
            [blocks[-1], self.ln_post],
            [self.proj],
        ]
        for group in groups[-unlocked_groups:]:
            unfreeze(group)

    def init_weights(self) -> None:
        """OpenCLIP's initialisation: N(0, width^-0.5) embeddings and projection, torch defaults elsewhere."""
        scale = self.width**-0.5
        init_linear_default(self.conv1)
        nn.init.normal_(self.class_embedding, std=scale)
        with torch.no_grad():
            if self.sincos_positions:
                self.positional_embedding.copy_(sincos_2d_table(self.width, self.grid_size[0]))
            else:
                nn.init.normal_(self.positional_embedding, std=scale)
        init_norm(self.ln_pre)
        self.transformer.init_weights()
        for pooler in (self.attn_pool, self.attn_pool_contrastive):
            if pooler is not None:
                pooler.init_weights()
        init_norm(self.ln_post)
        nn.init.normal_(self.proj, std=scale)
