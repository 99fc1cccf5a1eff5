"""OpenAI's ModifiedResNet image tower.

It differs from torchvision's ResNet in three ways: a stem of three 3x3 convolutions and an average pool
(instead of one 7x7 convolution and a max pool); anti-aliased downsampling, where a stride-s average pool
precedes the stride-1 convolution (in the block and in its shortcut); and attention pooling at the end,
where the mean of the final feature map queries all positions.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from clipcore.errors import ConfigError
from clipcore.towers.layers import BatchNorm2d, Conv2d, Linear, init_linear_default, init_norm
from spec.config import VisionConfig

EXPANSION = 4  # a bottleneck's output has 4x its inner width


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine terms, all four held as buffers (not parameters).

    torchvision's FrozenBatchNorm2d, which OpenCLIP swaps in when locking with frozen statistics: the
    state-dict keys stay those of BatchNorm2d, less `num_batches_tracked` (dropped when loading one).
    """

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.num_features, self.eps, self.affine = bn.num_features, bn.eps, bn.affine
        ones = torch.ones_like(bn.running_var)
        self.register_buffer("weight", bn.weight.detach().clone() if bn.affine else ones)
        self.register_buffer("bias", bn.bias.detach().clone() if bn.affine else torch.zeros_like(ones))
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The same arithmetic as the reference: one scale and one shift per channel.
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1) + self.eps).rsqrt()
        shift = self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale
        return x * scale + shift

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def freeze_batch_norm_2d(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d (SyncBatchNorm too) in `module` by a FrozenBatchNorm2d, in place; a
    BatchNorm2d passed itself is returned converted."""
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        return FrozenBatchNorm2d(module)
    for name, child in module.named_children():
        frozen = freeze_batch_norm_2d(child)
        if frozen is not child:
            module.add_module(name, frozen)
    return module


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> (avgpool when striding) -> 1x1 expand, plus the (pooled, projected) shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = BatchNorm2d(planes * EXPANSION)
        self.downsample: nn.Sequential | None = None
        if stride > 1 or inplanes != planes * EXPANSION:
            # Keys "-1" (no parameters), "0", "1", as in OpenAI's checkpoints.
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride) if stride > 1 else nn.Identity()),
                        ("0", Conv2d(inplanes, planes * EXPANSION, 1, bias=False)),
                        ("1", BatchNorm2d(planes * EXPANSION)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity, inplace=True)

    def init_weights(self) -> None:
        for conv in (self.conv1, self.conv2, self.conv3):
            init_linear_default(conv)
        for bn in (self.bn1, self.bn2, self.bn3):
            init_norm(bn)
        nn.init.zeros_(self.bn3.weight)  # each residual branch starts as zero: the block is the identity
        if self.downsample is not None:
            init_linear_default(getattr(self.downsample, "0"))
            init_norm(getattr(self.downsample, "1"))


class AttentionPool2d(nn.Module):
    """Multi-head attention pooling: the spatial mean (plus positions) queries the feature map."""

    def __init__(self, grid: int, dim: int, heads: int, output_dim: int) -> None:
        super().__init__()
        self.dim, self.heads = dim, heads
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, dim))
        self.k_proj = Linear(dim, dim)
        self.q_proj = Linear(dim, dim)
        self.v_proj = Linear(dim, dim)
        self.c_proj = Linear(dim, output_dim)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, L, head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        # Only the mean token's output is kept, so it is the only query (OpenAI's later, equivalent form).
        q = self._split_heads(self.q_proj(x[:, :1]))
        k, v = self._split_heads(self.k_proj(x)), self._split_heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, 1, head_dim)
        return self.c_proj(out.transpose(1, 2).flatten(1))

    def init_weights(self) -> None:
        std = self.dim**-0.5
        nn.init.normal_(self.positional_embedding, std=std)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.c_proj):
            init_linear_default(proj)  # the biases keep torch's default
            nn.init.normal_(proj.weight, std=std)


class ModifiedResNet(nn.Module):
    """The ResNet image tower; `width` is the stem width, the final feature width is 32 * width."""

    def __init__(self, cfg: VisionConfig, embed_dim: int) -> None:
        super().__init__()
        width = cfg.width
        self.image_size = cfg.image_size
        self.conv1 = Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = BatchNorm2d(width // 2)
        self.conv2 = Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = BatchNorm2d(width // 2)
        self.conv3 = Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)

        inplanes = width
        for stage, blocks in enumerate(cfg.layers):
            planes = width * 2**stage
            stride = 1 if stage == 0 else 2
            layer = [Bottleneck(inplanes, planes, stride)]
            layer += [Bottleneck(planes * EXPANSION, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layer))
            inplanes = planes * EXPANSION

        self.attnpool = AttentionPool2d(cfg.image_size // 32, width * 32, cfg.heads, embed_dim)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        x = F.relu(self.bn3(self.conv3(x)), inplace=True)
        return self.avgpool(x)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)

    def lock(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """Freeze the whole tower (LiT); with `freeze_bn_stats` the BatchNorms become FrozenBatchNorm2d, so
        their statistics stop updating in training mode. Partial locking is not defined for this tower."""
        if unlocked_groups != 0:
            raise ConfigError(
                f"lock_image_tower(unlocked_groups={unlocked_groups}) on a ModifiedResNet: partial locking is not "
                "supported for this tower (nor by the reference)",
                fix="use unlocked_groups=0 (the whole image tower frozen)",
            )
        self.requires_grad_(False)
        if freeze_bn_stats:
            freeze_batch_norm_2d(self)

    def init_weights(self) -> None:
        for conv in (self.conv1, self.conv2, self.conv3):
            init_linear_default(conv)
        for bn in (self.bn1, self.bn2, self.bn3):
            init_norm(bn)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                block.init_weights()
        self.attnpool.init_weights()
