"""CLIP image preprocessing: the reference eval transforms, value for value, without torchvision.

`Preprocess(224)` gives what OpenAI's `clip._transform(224)` gives:
Resize(224, bicubic) -> CenterCrop(224) -> convert("RGB") -> ToTensor -> Normalize. Its options
cover open_clip's `image_transform(..., is_train=False)`: `resize_mode` 'shortest' (resize the short
side, centre-crop), 'longest' (fit inside, pad with `fill`) or 'squash' (ignore the aspect ratio),
and `interpolation` 'bicubic' or 'bilinear' (torchvision's 'nearest', 'box', 'hamming' and
'lanczos' too). The output is float32 (3, H, W) and equals the
reference to the last bit (the conformance suite checks max |diff| <= 1e-6 over every mode Pillow
opens: RGB, RGBA, LA, L, 1, P, CMYK, I;16, I, F, ...).

How it stays exact and gets faster:
- The resize is done in the image's own mode, before the RGB conversion, as the reference does
  (Pillow resamples 'P' and '1' with nearest neighbour and premultiplies alpha for RGBA/LA).
- For 8-bit images (L, RGB, RGBA, LA, CMYK, ...) it recomputes Pillow's fixed-point resize itself
  (`clipcore.image.resample`), only for the pixels the centre crop keeps, with one fused torch
  kernel per pass. Other modes (P, 1, I, I;16, F, PA, LAB) and filters (nearest, hamming, lanczos)
  go through Pillow's own resize, pad and crop, in the reference's order.
- uint8 -> float is the reference's own float32 arithmetic: x / 255, - mean, / std.
- One image is small work, so torch runs it on one thread (intra-op threads only add overhead);
  `batch` spreads images over worker threads instead.

Files are decoded with Pillow. `draft=True` (off by default, JPEG only) lets libjpeg decode at 1/2,
1/4 or 1/8 scale, never below the size the resize needs. It changes pixels. Measured on photo-like
JPEGs (quality 90, 224 and 336 'shortest'): max |draft - exact| 0.10 to 0.31 in normalised units
(mean about 0.01, under one uint8 level; the conformance bound is 0.5), and files processed 1.6-1.8x
faster at 640x480 and 1024x768, 2.6-2.9x at 2000x1500, about 3x at 4000x3000 (one core); no change
at 500x375, where no DCT scale fits. See benchmarks/bench_preprocess.py.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import PIL
import torch
from PIL import Image, ImageOps

from clipcore.image.geometry import INTERPOLATIONS, RESIZE_MODES, Layout, plan, target_size
from clipcore.image.loading import PathLike, apply_exif_orientation, check_not_empty, describe, open_image
from clipcore.image.resample import FILTERS, matches_pillow, resize_window
from clipcore.threads import one_torch_thread, threads_are_per_thread
from spec.errors import ClipcoreError, ConfigError, ImageError

__all__ = ["OPENAI_MEAN", "OPENAI_STD", "Preprocess", "normalize_uint8"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

OUTPUTS = ("float32", "uint8")

# Modes Pillow resizes with its 8-bit convolution -> the mode it resamples in (it premultiplies alpha).
_CONVOLVED = {
    "L": "L", "RGB": "RGB", "RGBA": "RGBa", "LA": "La", "RGBa": "RGBa",
    "RGBX": "RGBX", "CMYK": "CMYK", "YCbCr": "YCbCr", "HSV": "HSV",  # not LAB: Pillow treats a, b as signed
}
_PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                "nearest": Image.Resampling.NEAREST, "box": Image.Resampling.BOX,
                "hamming": Image.Resampling.HAMMING, "lanczos": Image.Resampling.LANCZOS}
# The Pillow route resizes the whole image, as the reference does; refuse absurd intermediates.
_MAX_FULL_RESIZE_PIXELS = 1 << 28


@functools.cache
def _fast_resize_ok() -> bool:
    if matches_pillow():
        return True
    warnings.warn(f"clipcore's exact resize does not reproduce Pillow {PIL.__version__}; falling back to "
                  "Pillow's own resize (same values, slower)", RuntimeWarning, stacklevel=3)
    return False


def _triple(value: Any, what: str) -> tuple[float, float, float]:
    """mean/std as open_clip takes them: one number for all channels, or three."""
    values = value if isinstance(value, (list, tuple)) else (value,) * 3
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or not all(np.isfinite(out)):
        raise ConfigError(f"{what} must be one number or three (one per RGB channel), got {value!r}")
    return out  # type: ignore[return-value]


def _channels_first(rgb: Image.Image) -> torch.Tensor:
    """An RGB image as float32 (3, H, W) of 0..255."""
    return torch.from_numpy(np.asarray(rgb).astype(np.float32)).permute(2, 0, 1)


def _pil_fill(mode: str, fill: int) -> int | float | tuple[int, ...]:
    """The pad colour in the image's own mode, as torchvision's pad builds it."""
    bands = Image.getmodebands(mode)
    if mode == "F":
        return float(fill)
    return (fill,) * bands if bands > 1 else fill


class Preprocess:
    """A callable PIL image (or file path) -> float32 tensor (3, H, W), equal to the reference.

    image_size: int or (height, width). mean/std: per-channel normalisation (default OpenAI's).
    interpolation: 'bicubic' | 'bilinear' ('random' = bicubic, as open_clip evaluates it), or
        torchvision's other Pillow filters: 'nearest', 'box', 'hamming', 'lanczos'.
    resize_mode: 'shortest' | 'longest' | 'squash' (see the module docstring).
    fill: pad value 0..255 for 'longest' (open_clip's fill_color).
    exif_transpose: turn images upright per their EXIF orientation first (the reference does not).
    draft: decode JPEG files at reduced scale (faster, not exact; see the module docstring).
    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 224,
        mean: Sequence[float] | float = OPENAI_MEAN,
        std: Sequence[float] | float = OPENAI_STD,
        interpolation: str = "bicubic",
        resize_mode: str = "shortest",
        fill: int = 0,
        *,
        exif_transpose: bool = False,
        draft: bool = False,
    ) -> None:
        self.size = target_size(image_size)  # (height, width)
        self.mean = _triple(mean, "mean")
        self.std = _triple(std, "std")
        if 0.0 in self.std:
            raise ConfigError(f"std must not contain 0, got {self.std}")
        if not isinstance(interpolation, str) or interpolation not in INTERPOLATIONS:
            raise ConfigError(f"unknown interpolation {interpolation!r}",
                              fix=f"use one of {sorted(INTERPOLATIONS)}")
        if not isinstance(resize_mode, str) or resize_mode not in RESIZE_MODES:
            raise ConfigError(f"unknown resize_mode {resize_mode!r}", fix=f"use one of {list(RESIZE_MODES)}")
        if isinstance(fill, bool) or not isinstance(fill, int) or not 0 <= fill <= 255:
            raise ConfigError(f"fill must be an int in 0..255, got {fill!r}")
        self.interpolation = interpolation
        self.resize_mode = resize_mode
        self.fill = fill
        self.exif_transpose = bool(exif_transpose)
        self.draft = bool(draft)
        self._mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any] | Any, *, image_size: int | tuple[int, int] | None = None, **options: Any
    ) -> Preprocess:
        """Build from an open_clip-style preprocess config: a mapping (`size` or `image_size`, `mean`,
        `std`, `interpolation`, `resize_mode`, `fill_color`, `mode`) or a dataclass with those fields
        (spec.config.PreprocessConfig, open_clip's PreprocessCfg). Missing or None entries take the
        defaults; other keys (a pretrained record's url, hf_hub, ...) are ignored. `image_size`
        overrides the config's size; `options` go to the constructor (exif_transpose, draft)."""
        if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
            cfg = dataclasses.asdict(cfg)
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"a preprocess config must be a mapping or a dataclass, got {type(cfg).__name__}")
        if cfg.get("mode") not in (None, "RGB"):
            raise ConfigError(f"preprocess config mode {cfg['mode']!r} is not supported", fix="use mode 'RGB'")
        size = image_size if image_size is not None else cfg.get("size", cfg.get("image_size"))
        if size is None:
            raise ConfigError("the preprocess config has no 'size'", fix="pass image_size=... as well")
        picked = {"mean": "mean", "std": "std", "interpolation": "interpolation",
                  "resize_mode": "resize_mode", "fill": "fill_color"}
        kwargs = {arg: cfg[key] for arg, key in picked.items() if cfg.get(key) is not None}
        return cls(size, **kwargs, **options)

    def __repr__(self) -> str:
        h, w = self.size
        return (f"Preprocess(image_size=({h}, {w}), resize_mode={self.resize_mode!r}, "
                f"interpolation={self.interpolation!r}, mean={self.mean}, std={self.std}, fill={self.fill}"
                f"{', exif_transpose=True' if self.exif_transpose else ''}{', draft=True' if self.draft else ''})")

    # -- public entry points --------------------------------------------------------------------

    def __call__(self, image: Image.Image | PathLike, *, output: str = "float32") -> torch.Tensor:
        """float32 (3, H, W) normalised, or with output='uint8' the RGB bytes (H, W, 3)."""
        out = self._empty(output)
        self._into(image, out, output)
        return out

    def batch(
        self, images: Iterable[Image.Image | PathLike], workers: int | None = None, output: str = "float32"
    ) -> torch.Tensor:
        """Preprocess many images: float32 (N, 3, H, W), or uint8 (N, H, W, 3) with output='uint8'
        (normalise those on the model's device with `normalize_uint8`, same values).

        Files are decoded and resized in `workers` threads (default: the CPUs this process may use),
        each running torch single-threaded. Decoding, resizing and the torch work release the GIL;
        copying pixels out of Pillow does not, which caps the scaling on many cores. The first
        failure raises its ImageError.
        """
        items = list(images)
        if workers is None:
            workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be a positive int, got {workers!r}")
        out = self._empty(output, len(items))
        if workers == 1 or len(items) <= 1:
            for i, item in enumerate(items):
                self._into(item, out[i], output, i)
            return out
        threads = torch.get_num_threads()
        try:
            with ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix="clipcore-pre") as pool:
                jobs = [pool.submit(self._into, item, out[i], output, i) for i, item in enumerate(items)]
                try:
                    for job in jobs:
                        job.result()
                except BaseException:
                    for job in jobs:
                        job.cancel()
                    raise
        finally:
            if threads_are_per_thread() and torch.get_num_threads() != threads:
                torch.set_num_threads(threads)  # the default new threads start with, which workers touched
        return out

    def layout(self, size: tuple[int, int]) -> Layout:
        """Where an image of (width, height) `size` lands: the resize size and the crop/pad offset."""
        return plan(size, self.size, self.resize_mode, self.interpolation)

    # -- internals --------------------------------------------------------------------------------

    def _empty(self, output: str, n: int | None = None) -> torch.Tensor:
        h, w = self.size
        if output == "float32":
            shape, dtype = (3, h, w), torch.float32
        elif output == "uint8":
            shape, dtype = (h, w, 3), torch.uint8
        else:
            raise ConfigError(f"unknown output {output!r}", fix=f"use one of {list(OUTPUTS)}")
        return torch.empty(shape if n is None else (n, *shape), dtype=dtype)

    def _into(self, item: Image.Image | PathLike, out: torch.Tensor, output: str, index: int | None = None) -> None:
        label = "" if index is None else f"item {index}: "
        image, name = self._open(item, label)
        with one_torch_thread():
            pixels = self._render(image, name).expand(3, *self.size)  # float32 RGB 0..255, channels first
            if output == "uint8":
                out.copy_(pixels.permute(1, 2, 0))
                return
            # ToTensor + Normalize in the reference's float32 operations: x / 255, - mean, / std.
            torch.div(pixels, 255, out=out)
            out.sub_(self._mean).div_(self._std)

    def _open(self, item: Image.Image | PathLike, label: str) -> tuple[Image.Image, str]:
        if isinstance(item, Image.Image):
            name = label + describe(item)
            try:
                item.load()  # a lazily opened image decodes here
            except Exception as e:
                raise ImageError(f"{name} cannot be decoded, it is truncated or corrupt "
                                 f"({type(e).__name__}: {e})", fix="re-download or re-encode the file") from e
            check_not_empty(item.size, name)
            return (apply_exif_orientation(item, name) if self.exif_transpose else item), name
        if isinstance(item, (str, os.PathLike)):
            draft = self._draft_size if self.draft else None
            image = open_image(item, exif_transpose=self.exif_transpose, draft_size=draft)
            return image, f"{label}image file {os.fspath(item)!r}"
        raise ImageError(f"{label}expected a PIL.Image.Image or a file path, got {type(item).__name__}",
                         fix="open the image with PIL.Image.open, or pass its path")

    def _draft_size(self, size: tuple[int, int]) -> tuple[int, int] | None:
        resized = self.layout(size).resized
        return resized if resized[0] < size[0] and resized[1] < size[1] else None

    def _render(self, image: Image.Image, name: str) -> torch.Tensor:
        """The output pixels as float32 (3 or 1, H, W) RGB (or grey) values 0..255."""
        layout = self.layout(image.size)
        fill = self.fill if self.resize_mode == "longest" else 0  # torchvision's CenterCrop pads with 0
        try:
            if image.mode in _CONVOLVED and layout.filter in FILTERS and _fast_resize_ok():
                return self._render_8bit(image, layout, fill)
            return self._render_pillow(image, layout, fill, name)
        except ClipcoreError:
            raise
        except (ValueError, OSError) as e:  # Pillow refusing this mode (e.g. 'La' cannot become RGB)
            raise ImageError(f"{name} in mode {image.mode!r} cannot be preprocessed ({e})",
                             fix="convert it first, e.g. image.convert('RGB')") from e

    def _render_8bit(self, image: Image.Image, layout: Layout, fill: int) -> torch.Tensor:
        x0, y0, x1, y1 = layout.window()
        resizes = layout.resized != image.size
        work = _CONVOLVED[image.mode] if resizes else image.mode
        pixels = resize_window(image, layout.resized, (x0, y0, x1, y1), layout.filter, mode=work)
        (ox, oy), (w, h) = layout.offset, layout.out
        rows, cols = slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox)
        if image.mode in ("RGB", "L"):
            if not layout.pads():
                return pixels
            canvas = torch.full((pixels.shape[0], h, w), float(fill))
            canvas[:, rows, cols] = pixels
            return canvas
        # Other modes: back to the image's mode (un-premultiply), pad there, then Pillow's RGB conversion.
        raw = pixels.permute(1, 2, 0).to(torch.uint8).contiguous().numpy()
        window = Image.frombuffer(work, (x1 - x0, y1 - y0), raw.tobytes(), "raw", work, 0, 1)
        if work != image.mode:
            window = window.convert(image.mode)
        if layout.pads():
            canvas = Image.new(image.mode, (w, h), _pil_fill(image.mode, fill))
            canvas.paste(window, (cols.start, rows.start))
            window = canvas
        return _channels_first(window.convert("RGB"))

    def _render_pillow(self, image: Image.Image, layout: Layout, fill: int, name: str) -> torch.Tensor:
        """Pillow's own resize, pad and crop, in the reference's order, for the remaining modes."""
        (ox, oy), (w, h), (rw, rh) = layout.offset, layout.out, layout.resized
        if layout.resized != image.size:
            if rw * rh > _MAX_FULL_RESIZE_PIXELS:
                raise ImageError(
                    f"{name}: mode {image.mode!r} is resized whole, as the reference does, and that "
                    f"needs a {rw}x{rh} intermediate image", fix="convert it to RGB first")
            image = image.resize(layout.resized, _PIL_FILTERS[layout.filter])
        if layout.pads():
            left, top = max(0, -ox), max(0, -oy)
            border = (left, top, max(0, w - rw - left), max(0, h - rh - top))
            palette = image.getpalette() if image.mode == "P" else None
            image = ImageOps.expand(image, border=border, fill=_pil_fill(image.mode, fill))
            if palette is not None:
                image.putpalette(palette)
        cx, cy = max(0, ox), max(0, oy)
        image = image.crop((cx, cy, cx + w, cy + h))  # a new image: its info is ours to edit
        # A palette's transparency does not change RGB values; dropping it avoids Pillow's warning.
        image.info.pop("transparency", None)
        return _channels_first(image.convert("RGB"))


def normalize_uint8(
    batch: torch.Tensor,
    mean: Sequence[float] | float = OPENAI_MEAN,
    std: Sequence[float] | float = OPENAI_STD,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (H, W, 3) RGB -> float32 (N, 3, H, W) or (3, H, W), normalised.

    Same float32 operations as `Preprocess` (x / 255, - mean, / std), so the values are identical to
    the float output; run it on the model's device to ship 4x fewer bytes there.
    """
    if not isinstance(batch, torch.Tensor) or batch.dtype != torch.uint8 or batch.dim() not in (3, 4) \
            or batch.shape[-1] != 3:
        what = f"{batch.dtype} {tuple(batch.shape)}" if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise ImageError(f"normalize_uint8 expects a uint8 tensor (N, H, W, 3) or (H, W, 3), got {what}",
                         fix="pass the output of Preprocess.batch(..., output='uint8')")
    m = torch.tensor(_triple(mean, "mean"), dtype=torch.float32, device=device).view(3, 1, 1)
    s = torch.tensor(_triple(std, "std"), dtype=torch.float32, device=device).view(3, 1, 1)
    x = batch.to(device) if device is not None else batch
    x = x.movedim(-1, -3).to(torch.float32, memory_format=torch.contiguous_format)
    return x.div_(255).sub_(m).div_(s)
