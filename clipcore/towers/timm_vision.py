"""An image tower made of a timm model (the optional `timm` extra): OpenCLIP's TimmModel, keys and all.

image -> trunk (a timm model, built without pretrained weights) -> head (optional attention pool, then a
linear or MLP projection to embed_dim). The trunk's own classifier is the projection when the config asks for
neither a separate projection nor an attention pool: then timm builds it with `num_classes=embed_dim`
(or 0 for `timm_proj='none'`: pooled features as they are) and the given global pool.

State-dict keys are `trunk.<timm names>` and `head.{pool,proj,mlp}.*` (under `visual.` in a CLIP).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from types import ModuleType

import torch
from torch import nn

from clipcore.errors import ClipcoreError, ConfigError, UnknownModelError
from clipcore.towers.foreign import ForeignTower, import_extra, lean_build
from clipcore.towers.resnet import FrozenBatchNorm2d
from spec.config import VisionConfig

log = logging.getLogger(__name__)

ATTENTION_POOLS = ("abs_attn", "rot_attn")  # pools the head adds (they end in their own projection)
HEAD_PROJECTIONS = ("linear", "mlp")  # projections the head adds after the trunk


class TimmVision(ForeignTower):
    """timm trunk + adapter head. Inputs are (B, 3, H, W) images; outputs (B, embed_dim) features."""

    def __init__(self, cfg: VisionConfig, embed_dim: int) -> None:
        super().__init__()
        self.cfg, self.embed_dim = cfg, embed_dim
        self.image_size = cfg.image_size_hw  # recorded only: timm keeps the trunk's own input size
        self.output_tokens = False  # OpenCLIP's timm towers return pooled features only
        trunk, head = lean_build(self._build_parts)
        self.trunk = trunk
        self.head = head
        self.remember_constants()

    def _build_parts(self) -> tuple[nn.Module, nn.Sequential]:
        timm = import_extra("timm", self.cfg.timm_model_name)
        cfg = self.cfg
        if not timm.is_model(cfg.timm_model_name):
            raise UnknownModelError(
                f"vision.timm_model_name = {cfg.timm_model_name!r} is not a timm model (timm {timm.__version__})",
                fix="use a name from timm.list_models(), or a newer timm",
            )
        try:
            return self._create(timm)
        except (AssertionError, TypeError, ValueError) as e:
            if isinstance(e, ClipcoreError):
                raise
            # timm checks its arguments with asserts and keyword errors (e.g. a pool the model lacks)
            raise ConfigError(
                f"timm cannot build {cfg.timm_model_name!r} with timm_pool = {cfg.timm_pool!r}, timm_proj = "
                f"{cfg.timm_proj!r}, timm_drop_path = {cfg.timm_drop_path!r}, patch_dropout = {cfg.patch_dropout!r}: "
                f"{e or type(e).__name__}",
                fix="choose options this timm model supports (see its constructor)",
            ) from e

    def _create(self, timm: ModuleType) -> tuple[nn.Module, nn.Sequential]:
        cfg, embed_dim = self.cfg, self.embed_dim
        name, pool, proj = cfg.timm_model_name, cfg.timm_pool, cfg.timm_proj
        # Only what the config sets is passed: not every timm model takes these arguments.
        extra = {}
        if cfg.timm_drop_path is not None:
            extra["drop_path_rate"] = cfg.timm_drop_path
        if cfg.patch_dropout > 0:
            extra["patch_drop_rate"] = cfg.patch_dropout
        attention_pool = pool in ATTENTION_POOLS
        # pretrained=False always: weights come from a clipcore checkpoint, never from a download.
        if proj not in HEAD_PROJECTIONS and not attention_pool:
            trunk = timm.create_model(
                name, pretrained=False, num_classes=0 if proj == "none" else embed_dim, global_pool=pool, **extra
            )
            width = embed_dim
        else:
            trunk = timm.create_model(name, pretrained=False, **extra)
            feat_size = trunk.default_cfg.get("pool_size")
            if attention_pool:
                if not feat_size:
                    raise ConfigError(
                        f"vision.timm_pool = {pool!r} needs a trunk with 2-D feature maps; {name!r} has none",
                        fix="use a CNN-like timm model, or timm_pool = 'avg' / 'token' / ''",
                    )
                trunk.reset_classifier(0, global_pool="")
            else:
                # An empty pool keeps the trunk's default pooling.
                trunk.reset_classifier(0, **({"global_pool": pool} if pool else {}))
            width = trunk.num_features

        from timm.layers import AttentionPool2d, Mlp, RotAttentionPool2d

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if pool == "abs_attn":
            layers["pool"] = AttentionPool2d(width, feat_size=feat_size, out_features=embed_dim)
            width = embed_dim
        elif pool == "rot_attn":
            layers["pool"] = RotAttentionPool2d(width, out_features=embed_dim)
            width = embed_dim
        if proj == "linear":
            layers["drop"] = nn.Dropout(cfg.timm_drop)
            layers["proj"] = nn.Linear(width, embed_dim, bias=cfg.timm_proj_bias)
        elif proj == "mlp":
            layers["mlp"] = Mlp(
                width, 2 * embed_dim, embed_dim, drop=(cfg.timm_drop, 0.0), bias=(True, cfg.timm_proj_bias)
            )
        return trunk, nn.Sequential(layers)

    def rebuild(self) -> nn.Module:
        return TimmVision(self.cfg, self.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def lock(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """Freeze the trunk (LiT); the head stays trainable. With `unlocked_groups` n > 0, timm's own layer
        groups (`group_matcher`) decide: every group but the last n is frozen. `freeze_bn_stats` also turns
        the frozen part's BatchNorms into FrozenBatchNorm2d (fixed statistics)."""
        if not unlocked_groups:
            self.trunk.requires_grad_(False)
            if freeze_bn_stats:
                _freeze_batch_norms(self.trunk, None)
            return
        from timm.models import group_modules, group_parameters

        matcher = self.trunk.group_matcher()
        groups = group_parameters(self.trunk, matcher)
        last_frozen = max(groups) - unlocked_groups
        for group in range(last_frozen + 1):
            for name in groups.get(group, ()):
                self.trunk.get_parameter(name).requires_grad_(False)
        if freeze_bn_stats and last_frozen >= 0:
            modules = group_modules(self.trunk, matcher, reverse=True)
            _freeze_batch_norms(self.trunk, {name for name, group in modules.items() if group <= last_frozen})

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        try:
            self.trunk.set_grad_checkpointing(enable)
        except Exception as e:  # timm raises assorted errors for models without checkpointing
            name = self.cfg.timm_model_name
            log.warning("timm model %r does not support gradient checkpointing (%s); continuing without", name, e)


def _freeze_batch_norms(module: nn.Module, names: set[str] | None) -> None:
    """Replace the BatchNorm2d / SyncBatchNorm layers named in `names` (all when None) by FrozenBatchNorm2d."""
    for name, child in list(module.named_modules()):
        if isinstance(child, (nn.BatchNorm2d, nn.SyncBatchNorm)) and (names is None or name in names):
            parent_name, _, attr = name.rpartition(".")
            module.get_submodule(parent_name).add_module(attr, FrozenBatchNorm2d(child))
