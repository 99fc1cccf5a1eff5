"""OpenCLIP's training transform (`image_transform(..., is_train=True)`), on Pillow and numpy.

    train = TrainTransform(224, aug_cfg={"scale": (0.9, 1.0), "color_jitter": (0.4, 0.4, 0.4, 0.1),
                                         "color_jitter_prob": 0.8, "gray_scale_prob": 0.2})
    x = train(image)                        # float32 (3, 224, 224)

The steps, in the reference's order:
1. a random resized crop: a box of (scale x area) pixels and log-uniform aspect ratio in [3/4, 4/3], placed
   uniformly, resized to the output size with bicubic filtering (torchvision's RandomResizedCrop);
2. conversion to RGB;
3. with probability `color_jitter_prob`: brightness, contrast, saturation and hue jitter in a random
   order (torchvision's ColorJitter);
4. with probability `gray_scale_prob`: greyscale, as three equal channels;
5. ToTensor and Normalize.
Randomness comes from the same generators in the same order as the reference (torch's global generator
for the crop box and the jitter, Python's `random` for the two coin flips), so after `torch.manual_seed`
and `random.seed` it draws exactly what the reference draws.

Like the reference, `ratio`, `re_prob` and `re_count` only act through timm's transform (`use_timm`), which
clipcore does not provide: they are ignored with a warning, and `use_timm=True` is refused.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance

from clipcore.image.geometry import target_size
from clipcore.image.loading import open_image
from clipcore.preprocess import OPENAI_MEAN, OPENAI_STD, _triple
from spec.errors import ConfigError, ImageError

__all__ = ["AugmentationCfg", "TrainTransform", "random_resized_crop_box"]

ASPECT_RATIOS = (3 / 4, 4 / 3)  # torchvision's default: the reference never passes its own
TIMM_ONLY = ("ratio", "re_prob", "re_count")  # the reference uses these only through timm


@dataclass(frozen=True)
class AugmentationCfg:
    """OpenCLIP's AugmentationCfg: the same fields and defaults."""

    scale: tuple[float, float] = (0.9, 1.0)
    ratio: tuple[float, float] | None = None
    color_jitter: float | tuple[float, float, float, float] | None = None
    re_prob: float | None = None
    re_count: int | None = None
    use_timm: bool = False
    color_jitter_prob: float | None = None
    gray_scale_prob: float | None = None

    @classmethod
    def from_any(cls, cfg: AugmentationCfg | Mapping[str, Any] | Any | None) -> AugmentationCfg:
        """From None, a mapping, this class or another dataclass with these fields (open_clip's own)."""
        if cfg is None or isinstance(cfg, cls):
            return cfg or cls()
        if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
            cfg = dataclasses.asdict(cfg)
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"aug_cfg must be a mapping or an AugmentationCfg, got {type(cfg).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"aug_cfg has unknown keys {unknown}", fix=f"use only {sorted(known)}")
        return cls(**cfg)


def _probability(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"aug_cfg.{name} = {value!r} is not a probability", fix="use a number in [0, 1]")
    return float(value)


def _jitter_range(value: float, name: str, center: float, bound: tuple[float, float]) -> tuple[float, float] | None:
    """torchvision's reading of one jitter strength: [center - v, center + v] (clipped at 0 except for hue);
    None when it does nothing."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"aug_cfg.color_jitter {name} = {value!r} must be a non-negative number")
    low, high = center - float(value), center + float(value)
    if center == 1:
        low = max(low, 0.0)
    if not bound[0] <= low <= high <= bound[1]:
        raise ConfigError(f"aug_cfg.color_jitter {name} = {value!r} gives [{low}, {high}], outside {bound}")
    return None if low == high == center else (low, high)


def random_resized_crop_box(
    width: int, height: int, scale: Sequence[float], ratio: Sequence[float] = ASPECT_RATIOS
) -> tuple[int, int, int, int]:
    """(top, left, box height, box width), drawn from torch's global generator exactly as torchvision does:
    ten tries at a box of uniform area fraction and log-uniform aspect ratio; else the centred largest box
    within the ratio range."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, size=(1,)).item()
            left = torch.randint(0, width - w + 1, size=(1,)).item()
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _shift_hue(image: Image.Image, factor: float) -> Image.Image:
    """Rotate the hue by `factor` of a turn in Pillow's 8-bit HSV (wrapping), as torchvision does."""
    if image.mode in ("L", "1", "I", "F"):
        return image
    h, s, v = image.convert("HSV").split()
    shifted = np.asarray(h, dtype=np.uint8) + np.array(int(factor * 255)).astype(np.uint8)  # uint8 wraps around
    return Image.merge("HSV", (Image.fromarray(shifted.astype(np.uint8), "L"), s, v)).convert(image.mode)


# The jitter operations in torchvision's numbering (the random order is a permutation of 0..3).
_JITTER_OPS = (
    lambda im, f: ImageEnhance.Brightness(im).enhance(f),
    lambda im, f: ImageEnhance.Contrast(im).enhance(f),
    lambda im, f: ImageEnhance.Color(im).enhance(f),
    _shift_hue,
)


class TrainTransform:
    """A callable PIL image (or file path) -> float32 (3, H, W): OpenCLIP's training augmentation."""

    def __init__(
        self,
        image_size: int | tuple[int, int],
        mean: Sequence[float] | float = OPENAI_MEAN,
        std: Sequence[float] | float = OPENAI_STD,
        aug_cfg: AugmentationCfg | Mapping[str, Any] | None = None,
    ) -> None:
        cfg = AugmentationCfg.from_any(aug_cfg)
        if cfg.use_timm:
            raise ConfigError(
                "aug_cfg.use_timm = True asks for timm's create_transform, which clipcore's training transform "
                "does not provide",
                fix="drop use_timm (and the timm-only options ratio, re_prob, re_count), or build the transform "
                    "with timm.data.create_transform yourself",
            )
        unused = [name for name in TIMM_ONLY if getattr(cfg, name) is not None]
        if unused:
            warnings.warn(f"augmentation options {unused} act only through timm (use_timm) in OpenCLIP; "
                          "they are ignored, as the reference ignores them", UserWarning, stacklevel=2)
        self.size = target_size(image_size)  # (height, width)
        self.scale = tuple(float(s) for s in cfg.scale)
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"aug_cfg.scale = {cfg.scale!r} must be (low, high) with 0 < low <= high")
        self.mean, self.std = _triple(mean, "mean"), _triple(std, "std")
        self.jitter_prob = _probability(cfg.color_jitter_prob, "color_jitter_prob") if cfg.color_jitter_prob else 0.0
        self.jitter: tuple = ()
        if self.jitter_prob:
            if not isinstance(cfg.color_jitter, (tuple, list)) or len(cfg.color_jitter) != 4:
                raise ConfigError(
                    f"aug_cfg.color_jitter_prob is set but color_jitter = {cfg.color_jitter!r}",
                    fix="give color_jitter as four strengths (brightness, contrast, saturation, hue)",
                )
            b, c, s, h = cfg.color_jitter
            inf = float("inf")
            self.jitter = (_jitter_range(b, "brightness", 1, (0, inf)), _jitter_range(c, "contrast", 1, (0, inf)),
                           _jitter_range(s, "saturation", 1, (0, inf)), _jitter_range(h, "hue", 0, (-0.5, 0.5)))
        self.gray_prob = _probability(cfg.gray_scale_prob, "gray_scale_prob") if cfg.gray_scale_prob else 0.0
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)

    def __repr__(self) -> str:
        return (f"TrainTransform(image_size={self.size}, scale={self.scale}, jitter_prob={self.jitter_prob}, "
                f"gray_scale_prob={self.gray_prob}, mean={self.mean}, std={self.std})")

    def __call__(self, image: Image.Image | str | os.PathLike) -> torch.Tensor:
        image = self._open(image)
        box = random_resized_crop_box(image.width, image.height, self.scale)
        return self.apply(image, box)

    def apply(self, image: Image.Image, box: tuple[int, int, int, int]) -> torch.Tensor:
        """The transform for a given crop box (top, left, height, width); jitter and greyscale still random."""
        rgb = self.crop_resize(image, box).convert("RGB")
        if self.jitter_prob and random.random() < self.jitter_prob:
            rgb = self._color_jitter(rgb)
        if self.gray_prob and random.random() < self.gray_prob:
            grey = np.asarray(rgb.convert("L"), dtype=np.uint8)
            rgb = Image.fromarray(np.dstack([grey, grey, grey]), "RGB")
        pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float()
        return pixels.div_(255).sub_(self._mean).div_(self._std)

    def crop_resize(self, image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
        """The box cut out and resized (bicubic) to the output size, in the image's own mode."""
        top, left, h, w = box
        height, width = self.size
        return image.crop((left, top, left + w, top + h)).resize((width, height), Image.Resampling.BICUBIC)

    def _color_jitter(self, image: Image.Image) -> Image.Image:
        order = torch.randperm(4).tolist()
        factors = [None if r is None else float(torch.empty(1).uniform_(r[0], r[1])) for r in self.jitter]
        for op in order:
            if factors[op] is not None:
                image = _JITTER_OPS[op](image, factors[op])
        return image

    @staticmethod
    def _open(image: Any) -> Image.Image:
        if isinstance(image, Image.Image):
            return image
        if isinstance(image, (str, os.PathLike)):
            return open_image(image)
        raise ImageError(f"expected a PIL.Image.Image or a file path, got {type(image).__name__}",
                         fix="open the image with PIL.Image.open, or pass its path")
