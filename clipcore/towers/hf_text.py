"""A text tower made of a Hugging Face encoder (the optional `hf` extra): OpenCLIP's HFTextEncoder.

token ids -> attention mask (ids != the model's pad id) -> transformers encoder (built from its config, never
from downloaded weights) -> pooler (masked mean, masked max, the CLS token, or the model's own pooler output)
-> projection to embed_dim (linear, or a two-layer MLP with GELU).

State-dict keys are `transformer.<transformers names>` and `proj.*` (under `text.` in a CLIP). The model's
config is read offline only: from a local folder, from the local Hugging Face hub cache, or from the copies
clipcore ships for the models OpenCLIP's configs name (clipcore/data/hf_configs/).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipcore.errors import ConfigError, OfflineError, UnsupportedModelError
from clipcore.towers.foreign import ForeignTower, import_extra, lean_build
from spec.config import TextConfig


@dataclass(frozen=True)
class Arch:
    """Where a transformers architecture keeps what the tower needs (None: OpenCLIP cannot partially lock it)."""

    width: str  # the config attribute holding the hidden width
    layers: str | None = None  # the encoder's list of blocks
    embeddings: str | None = None  # the token-embedding module


ARCHS = {
    "roberta": Arch("hidden_size", "layer", "embeddings"),
    "xlm-roberta": Arch("hidden_size", "layer", "embeddings"),
    "mt5": Arch("d_model", "block", "embed_tokens"),
    "bert": Arch("hidden_size"),
    "m2m_100": Arch("d_model"),
}


def _mean_pool(out: Any, mask: torch.Tensor) -> torch.Tensor:
    return (out.last_hidden_state * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(-1, keepdim=True)


def _max_pool(out: Any, mask: torch.Tensor) -> torch.Tensor:
    # Padding is excluded. (OpenCLIP 3.3.0's max pooler fails on its own integer mask; this is what it means.)
    hidden = out.last_hidden_state
    return hidden.masked_fill(~mask.bool().unsqueeze(-1), -torch.inf).max(dim=1).values


def _cls_pool(out: Any, mask: torch.Tensor) -> torch.Tensor:
    pooled = getattr(out, "pooler_output", None)  # the model's own pooler, when it was built with one
    return pooled if pooled is not None else out.last_hidden_state[:, 0]


def _first_token(out: Any, mask: torch.Tensor) -> torch.Tensor:
    return out.last_hidden_state[:, 0]


POOLERS = {
    "mean_pooler": _mean_pool,
    "max_pooler": _max_pool,
    "cls_pooler": _cls_pool,
    "cls_last_hidden_state_pooler": _first_token,
}


class HFText(ForeignTower):
    """transformers encoder + pooler + projection. Inputs are (B, L) token ids; outputs (B, embed_dim)."""

    def __init__(self, cfg: TextConfig, embed_dim: int) -> None:
        super().__init__()
        self.cfg, self.embed_dim = cfg, embed_dim
        self.output_tokens = cfg.output_tokens
        self.pooler_type = cfg.hf_pooler_type
        self.config = hf_model_config(cfg.hf_model_name)
        self.arch = ARCHS.get(self.config.model_type)
        if self.arch is None:
            raise UnsupportedModelError(
                f"the Hugging Face model {cfg.hf_model_name!r} is a {self.config.model_type!r}; OpenCLIP's text "
                f"towers (and clipcore's) support {sorted(ARCHS)}",
                fix="use one of those architectures",
            )
        # OpenCLIP's attributes: the model's own limits, not the tokenizer's context length.
        self.vocab_size = getattr(self.config, "vocab_size", 0)
        self.context_length = getattr(self.config, "max_position_embeddings", 0)
        self.transformer = lean_build(self._build_transformer)
        self.proj = self._projection(getattr(self.config, self.arch.width))
        self.remember_constants()

    def _build_transformer(self) -> nn.Module:
        transformers = import_extra("hf", self.cfg.hf_model_name)
        auto = transformers.AutoModel
        if getattr(self.config, "is_encoder_decoder", False):
            return auto.from_config(self.config).encoder  # an encoder-decoder (mT5, NLLB): its encoder only
        # The model's own pooling layer exists only for the pooler that uses it.
        return auto.from_config(self.config, add_pooling_layer=self.pooler_type == "cls_pooler")

    def _projection(self, width: int) -> nn.Module:
        kind, out = self.cfg.hf_proj_type, self.embed_dim
        if kind == "linear":
            return nn.Linear(width, out, bias=False)
        if kind == "mlp":
            hidden = (width + out) // 2
            return nn.Sequential(nn.Linear(width, hidden, bias=False), nn.GELU(), nn.Linear(hidden, out, bias=False))
        if width != out:
            raise ConfigError(
                f"text.hf_proj_type = {kind!r} (no projection) but the model's width {width} differs from "
                f"embed_dim = {out}",
                fix="use hf_proj_type 'linear' or 'mlp', or set embed_dim to the model's width",
            )
        return nn.Identity()

    def rebuild(self) -> nn.Module:
        return HFText(self.cfg, self.embed_dim)

    def encode_tokens(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected pooled features, token features) for a (B, L) batch of token ids."""
        mask = (text != self.config.pad_token_id).long()
        out = self.transformer(input_ids=text, attention_mask=mask)
        projected = self.proj(POOLERS[self.pooler_type](out, mask))
        tokens = out.last_hidden_state
        if self.pooler_type == "cls_pooler":  # the CLS position is the pooled one: not a token feature
            tokens = tokens[:, 1:]
        return projected, tokens

    def forward(self, text: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        projected, tokens = self.encode_tokens(text)
        return (projected, tokens) if self.output_tokens else projected

    def lock(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        """Freeze the encoder as OpenCLIP does (the projection stays trainable). With `unlocked_layers` n > 0,
        the embeddings and all blocks but the last n are frozen. Parameters of modules named `LayerNorm`
        (BERT-style names) stay trainable unless `freeze_layer_norm`."""
        if not unlocked_layers:
            _freeze(self.transformer, freeze_layer_norm)
            return
        if self.arch.layers is None:
            raise UnsupportedModelError(
                f"partial locking of a {self.config.model_type!r} text tower is not supported (OpenCLIP does not "
                "define its layer groups)",
                fix="lock it whole (unlocked_layers=0)",
            )
        encoder = getattr(self.transformer, "encoder", self.transformer)
        blocks = list(getattr(encoder, self.arch.layers))
        embeddings = getattr(self.transformer, self.arch.embeddings)
        for module in [embeddings, *blocks][:-unlocked_layers]:
            _freeze(module, freeze_layer_norm)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        # transformers 5 renamed gradient checkpointing to activation checkpointing; 4.x has the old names.
        action = "enable" if enable else "disable"
        model = self.transformer
        switch = getattr(model, f"activation_checkpointing_{action}", None) or getattr(
            model, f"gradient_checkpointing_{action}"
        )
        switch()


def _freeze(module: nn.Module, freeze_layer_norm: bool) -> None:
    for name, param in module.named_parameters():
        param.requires_grad_(not freeze_layer_norm if "LayerNorm" in name.split(".") else False)


# --- the model config, offline ------------------------------------------------------------------------------------


def hf_model_config(name: str) -> Any:
    """The transformers config of `name` (a hub id or a local folder), found without the network."""
    transformers = import_extra("hf", name)
    data = _read_config_json(name)
    model_type = data.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ConfigError(
            f"the Hugging Face config of {name!r} has no 'model_type'",
            fix="use a complete config.json (as written by transformers)",
        )
    try:
        return transformers.AutoConfig.for_model(model_type, **data)
    except (ValueError, KeyError, TypeError) as e:
        raise UnsupportedModelError(
            f"transformers {transformers.__version__} cannot build a {model_type!r} config for {name!r} ({e})",
            fix="install a transformers release that knows this architecture",
        ) from e


def _read_config_json(name: str) -> dict:
    for path in _config_candidates(name):
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ConfigError(f"cannot read the Hugging Face config {path}: {e}", fix="repair or delete it") from e
            if not isinstance(data, dict):
                raise ConfigError(f"{path} is not a JSON object", fix="repair or delete it")
            return data
    raise OfflineError(
        f"no config.json for the Hugging Face model {name!r}: not a local folder, not in the Hugging Face cache "
        f"({hub_cache()}), and not among the configs clipcore ships",
        fix=f"fetch it once (e.g. `huggingface-cli download {name} config.json`), or pass a local folder",
    )


def _config_candidates(name: str) -> list[Path]:
    local = Path(name).expanduser()
    candidates = [local / "config.json"] if local.is_dir() else []
    repo = hub_cache() / f"models--{name.replace('/', '--')}"
    revision = repo / "refs" / "main"
    if revision.is_file():
        candidates.append(repo / "snapshots" / revision.read_text().strip() / "config.json")
    candidates += sorted((repo / "snapshots").glob("*/config.json"), key=_mtime, reverse=True)
    shipped = resources.files("clipcore") / "data" / "hf_configs" / f"{name.replace('/', '--')}.json"
    candidates.append(Path(str(shipped)))
    return candidates


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def hub_cache() -> Path:
    """The local Hugging Face hub cache, as huggingface_hub finds it (read only; nothing is downloaded)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"
