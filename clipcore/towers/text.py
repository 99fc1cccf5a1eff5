"""The text transformer (OpenAI's causal text tower, with OpenCLIP's options).

token ids -> embeddings (+ an appended class token, CoCa-style) + positions -> transformer (causal mask)
-> LayerNorm -> pool (the EOT token by argmax, an eos id, first, last, or none) -> projection to embed_dim.

Its parameters live in one of two places. In OpenAI's layout (OpenCLIP's `CLIP`) they sit on the CLIP model
itself: `token_embedding`, `positional_embedding`, `transformer`, `ln_final`, `text_projection`. In
OpenCLIP's `CustomTextCLIP` layout they sit on a `TextTransformer` child named `text`. `TextEncoder` holds the
parts and the one forward for both: the CLIP model in OpenAI's layout is itself a `TextEncoder`.
"""

import torch
from torch import nn

from clipcore.errors import ConfigError
from clipcore.towers.layers import Linear, Transformer, act_factory, init_norm, norm_factory, unfreeze
from spec.config import TextConfig

# Registration order of the parts, as in the reference (it fixes the order of named_parameters()).
TOWER_ORDER = ("token_embedding", "cls_emb", "positional_embedding", "transformer", "ln_final", "text_projection")
# OpenCLIP's CLIP attaches the parts it takes from its text tower in this order. (It has no class token:
# spec refuses embed_cls outside the custom layout, since the flat CLIP would drop it.)
OPENAI_ORDER = ("transformer", "token_embedding", "positional_embedding", "ln_final", "text_projection", "cls_emb")


def pool_text(x: torch.Tensor, text: torch.Tensor, pool_type: str, eos_id: int) -> torch.Tensor:
    """The sequence feature(s) a text is represented by."""
    if pool_type == "first":
        return x[:, 0]
    if pool_type == "last":  # the last position, padding included (SigLIP)
        return x[:, -1]
    rows = torch.arange(x.shape[0], device=x.device)
    if pool_type == "argmax":  # OpenAI: the EOT token has the largest id; the first one wins
        return x[rows, text.argmax(dim=-1)]
    if pool_type == "eos":  # the first eos_id (position 0 when there is none)
        return x[rows, (text == eos_id).int().argmax(dim=-1)]
    return x  # 'none': every position


class TextEncoder(nn.Module):
    """The text tower's parts and its forward, for whichever module holds them."""

    def add_text_tower(self, cfg: TextConfig, embed_dim: int, quick_gelu: bool, openai_layout: bool) -> None:
        """Register the text tower's parameters on this module, in the chosen layout's order."""
        act = act_factory(quick_gelu, cfg.act_kwargs)
        norm = norm_factory(cfg.norm_kwargs)
        width = cfg.width
        self.context_length = cfg.context_length
        self.vocab_size = cfg.vocab_size
        self.text_width = width
        self.text_layers = cfg.layers
        self.text_pool_type = cfg.pool_type
        self.text_eos_id = cfg.eos_id
        self.text_pad_id = cfg.pad_id
        self.text_causal = not cfg.no_causal_mask
        if cfg.proj_type == "none":
            projection = None
        elif cfg.proj_bias:
            projection = Linear(width, embed_dim)
        else:
            projection = nn.Parameter(torch.empty(width, embed_dim))
        parts = {
            # No initialisation here (init_weights does it): nn.Embedding's own normal_ on the meta device
            # imports torch._dynamo, ~1-3 s and ~150 MB on every load.
            "token_embedding": nn.Embedding(cfg.vocab_size, width, _weight=torch.empty(cfg.vocab_size, width)),
            "cls_emb": nn.Parameter(torch.empty(width)) if cfg.embed_cls else None,
            "positional_embedding": nn.Parameter(torch.empty(cfg.num_positions, width)),
            "transformer": Transformer(cfg, width, cfg.heads, act, norm),
            "ln_final": norm(width),
            "text_projection": projection,
        }
        for name in OPENAI_ORDER if openai_layout else TOWER_ORDER:
            setattr(self, name, parts[name])

    def _cls_attention_mask(self, text: torch.Tensor) -> torch.Tensor:
        """Which keys each query may attend to when a class token is appended (True = may attend).

        Padding keys are masked. OpenCLIP builds the padding mask as if the class token came first, which
        shifts it one place to the right; CoCa weights were trained so, and the reference keeps it. That
        shift also keeps key 0 always visible, so no query ever sees no key.
        """
        keys = torch.cat([torch.ones_like(text[:, :1], dtype=torch.bool), text != self.text_pad_id], dim=1)
        allowed = keys[:, None, None, :]  # (B, 1, 1, L + 1), broadcast over heads and queries
        if self.text_causal:
            n = keys.shape[1]
            allowed = allowed & torch.ones(n, n, dtype=torch.bool, device=text.device).tril()
        return allowed

    def encode_tokens(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected pooled features, token features) for a (B, L) batch of token ids, L <= context."""
        dtype = self.transformer.resblocks[0].mlp.c_fc.weight.dtype
        x = self.token_embedding(text).to(dtype)
        attn_mask, is_causal = None, self.text_causal
        if self.cls_emb is not None:
            x = torch.cat([x, self.cls_emb.to(dtype).expand(x.shape[0], 1, -1)], dim=1)
            attn_mask, is_causal = self._cls_attention_mask(text), False
        x = x + self.positional_embedding[: x.shape[1]].to(dtype)
        x = self.transformer(x, attn_mask, is_causal)
        if self.cls_emb is not None:  # the class token is the representation; pool_type does not apply
            pooled, tokens = self.ln_final(x[:, -1]), x[:, :-1]
        else:
            x = self.ln_final(x)
            pooled, tokens = pool_text(x, text, self.text_pool_type, self.text_eos_id), x
        if isinstance(self.text_projection, torch.Tensor):
            pooled = pooled @ self.text_projection
        elif self.text_projection is not None:
            pooled = self.text_projection(pooled)
        return pooled, tokens

    def lock_text(self, unlocked_layers: int = 0) -> None:
        """Freeze the text tower's parts (LiT), then make the last `unlocked_layers` of OpenCLIP's groups
        trainable again: [token and position embeddings, class token], each block but the last,
        [last block, ln_final], [text_projection]. The logit scale and bias are not the tower's: untouched."""
        parts = [getattr(self, name) for name in TOWER_ORDER]
        parts = [part for part in parts if part is not None]
        for part in parts:
            part.requires_grad_(False)
        if unlocked_layers == 0:
            return
        blocks = list(self.transformer.resblocks)
        embeddings = [p for p in (self.token_embedding, self.positional_embedding, self.cls_emb) if p is not None]
        groups = [embeddings, *([block] for block in blocks[:-1]), [blocks[-1], self.ln_final]]
        if self.text_projection is not None:
            groups.append([self.text_projection])
        for group in groups[-min(unlocked_layers, len(groups)):]:
            unfreeze(group)

    def init_text_weights(self) -> None:
        """OpenCLIP's (and OpenAI's) text initialisation; what it does not touch gets torch's defaults."""
        width, layers = self.text_width, self.text_layers
        attn_std = width**-0.5
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        fc_std = (2 * width) ** -0.5
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if self.cls_emb is not None:
            nn.init.normal_(self.cls_emb, std=0.01)
        self.transformer.init_weights()
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        init_norm(self.ln_final)
        if isinstance(self.text_projection, nn.Linear):
            nn.init.normal_(self.text_projection.weight, std=width**-0.5)
            nn.init.zeros_(self.text_projection.bias)
        elif self.text_projection is not None:
            nn.init.normal_(self.text_projection, std=width**-0.5)


class TextTransformer(TextEncoder):
    """The text tower as its own module: `model.text` in OpenCLIP's CustomTextCLIP layout."""

    output_tokens: torch.jit.Final[bool]

    def __init__(self, cfg: TextConfig, embed_dim: int, quick_gelu: bool) -> None:
        super().__init__()
        self.output_tokens = cfg.output_tokens
        self.add_text_tower(cfg, embed_dim, quick_gelu, openai_layout=False)

    def forward(self, text: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The text features; with `output_tokens` (CoCa) also the tokens, as the reference returns them."""
        pooled, tokens = self.encode_tokens(text)
        if self.output_tokens:
            return pooled, tokens
        return pooled

    def lock(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        """OpenCLIP's `TextTransformer.lock`: see `lock_text`."""
        check_freeze_layer_norm(freeze_layer_norm)
        self.lock_text(unlocked_layers)

    def init_weights(self) -> None:
        self.init_text_weights()


def check_freeze_layer_norm(freeze_layer_norm: bool) -> None:
    """The native text tower's LayerNorms are locked with everything else; the reference refuses otherwise."""
    if not freeze_layer_norm:
        raise ConfigError(
            "lock_text_tower(freeze_layer_norm=False) is not supported by the native text tower: its "
            "LayerNorms are locked with the other weights (the reference refuses it too)",
            fix="pass freeze_layer_norm=True (the default), or unlock whole layers with unlocked_layers",
        )
