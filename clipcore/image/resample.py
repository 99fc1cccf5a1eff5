"""Pillow's 8-bit convolution resize, re-done exactly, for only the pixels that survive the crop.

Pillow (libImaging/Resample.c) resizes in two passes, one per axis, each rounding to uint8. For
every output pixel of a pass it takes a run of source pixels and a run of weights: the weights come
from the filter evaluated in double precision, are normalised to sum to one and rounded to fixed
point with 22 fractional bits; the pixel is the integer sum, plus half, shifted right by 22 and
clamped to 0..255. Everything here is that computation:

- `axis_taps` reproduces the weights bit for bit (same double operations, same order, same
  truncations), for a slice of outputs only.
- `resample_rows` computes the integer sums with `torch.nn.functional.embedding_bag`: one bag per
  output pixel, one table row per source line, so a pass is a single fused gather-multiply-add.
  It runs in float32, which is exact because every weight is split in two (a high part and a low
  byte) small enough that each product and every partial sum is an integer below 2**24. Where the
  split would not be exact (enormous downscales) it runs in float64, where any order is exact too.

Why not Pillow's own `resize(..., box=...)` for the crop? Pillow passes the box to C as 32-bit
floats, so the sample positions move by up to ~1e-4 pixel and about one output in a hundred
changes by one level. Computing the weights ourselves keeps the positions of the full resize.

Restricting a pass to some outputs is exact: each output pixel of a pass depends only on its own
run of source pixels, so the first pass only sees the source lines the kept outputs need. The pass
order is Pillow's: horizontal first, except (Pillow >= 13) vertical first when the height shrinks by
more than twice as many pixels as the width. `matches_pillow` checks all this against the installed
Pillow once; callers fall back to Pillow's own resize if it ever fails.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clipcore.threads import one_torch_thread

PRECISION_BITS = 22  # Pillow: 32 - 8 - 2
_HALF = 1 << (PRECISION_BITS - 1)
_LOW_BITS = 8  # weight = high * 256 + low, with 0 <= low < 256
_EXACT_F32 = 1 << 24  # integers up to here are exact in float32
_STRIP_FLOATS = 1 << 20  # the horizontal pass works on source strips of about this many floats (4 MiB)


def _bicubic(x: np.ndarray) -> np.ndarray:
    # Keys' cubic with a = -0.5, evaluated in Pillow's operation order.
    x = np.abs(x)
    near = ((1.5 * x - 2.5) * x) * x + 1.0
    far = ((((x - 5.0) * x) + 8.0) * x - 4.0) * -0.5
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _box(x: np.ndarray) -> np.ndarray:
    return np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)


# name -> (support radius at scale 1, filter function). Not hamming/lanczos: they call sin/cos, and
# numpy's may differ from the C library's in the last bit.
FILTERS = {"bicubic": (2.0, _bicubic), "bilinear": (1.0, _bilinear), "box": (0.5, _box)}


@dataclass(frozen=True)
class AxisTaps:
    """The weights of one pass for outputs [start, stop) of an axis.

    first, stop_src: the source lines [first, stop_src) the outputs read.
    index: source line of each tap, relative to `first` (rows of the table given to resample_rows).
    weight: float32 (high parts, then low bytes: 2n rows) or float64 (n rows) when `wide`.
    """

    first: int
    stop_src: int
    count: int
    index: torch.Tensor
    weight: torch.Tensor
    wide: bool


def fixed_point_weights(in_size: int, out_size: int, start: int, stop: int, filter: str):
    """Pillow's precompute_coeffs + normalize_coeffs_8bpc for outputs [start, stop) of one axis.

    Returns (xmin, xmax, index, weight): each output reads source pixels [xmin, xmax); index (n, ksize)
    holds them (0 on unused taps) and weight (n, ksize) their int64 fixed-point weights (0 if unused).
    """
    support_base, fn = FILTERS[filter]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = support_base * filterscale
    ksize = math.ceil(support) * 2 + 1
    center = (np.arange(start, stop, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size)
    taps = np.arange(ksize)
    used = taps[None, :] < (xmax - xmin)[:, None]
    pos = xmin[:, None] + taps[None, :]
    w = np.where(used, fn((pos.astype(np.float64) - center[:, None] + 0.5) * (1.0 / filterscale)), 0.0)
    total = np.zeros(len(center))
    for j in range(ksize):  # left to right, as Pillow sums (numpy's sum is pairwise)
        total = total + w[:, j]
    w = np.where(total[:, None] != 0.0, w / np.where(total == 0.0, 1.0, total)[:, None], w)
    scaled = w * float(1 << PRECISION_BITS)
    fixed = np.where(w < 0, np.trunc(-0.5 + scaled), np.trunc(0.5 + scaled)).astype(np.int64)
    return xmin, xmax, np.where(used, pos, 0), np.where(used, fixed, 0)


@functools.lru_cache(maxsize=1024)
def axis_taps(in_size: int, out_size: int, start: int, stop: int, filter: str) -> AxisTaps:
    """The embedding_bag form of `fixed_point_weights` (cached: photo sizes repeat)."""
    xmin, xmax, index, fixed = fixed_point_weights(in_size, out_size, start, stop, filter)
    first, stop_src = int(xmin.min()), int(xmax.max())
    rel = np.where(fixed != 0, index - first, 0)
    high, low = fixed >> _LOW_BITS, fixed & ((1 << _LOW_BITS) - 1)
    # The float32 split is exact if no sum of |weight part| * 255 reaches 2**24.
    wide = max(np.abs(high).sum(1).max(), low.sum(1).max()) * 255 >= _EXACT_F32
    if wide:
        weight = torch.from_numpy(fixed.astype(np.float64))
        index_t = torch.from_numpy(rel)
    else:
        weight = torch.from_numpy(np.concatenate([high, low]).astype(np.float32))
        index_t = torch.from_numpy(np.concatenate([rel, rel]))
    return AxisTaps(first, stop_src, len(xmin), index_t, weight, bool(wide))


def resample_rows(table: torch.Tensor, taps: AxisTaps) -> torch.Tensor:
    """One pass: table (source lines, L) float32 of 0..255 -> (outputs, L) float32 of 0..255 (integers)."""
    n = taps.count
    if taps.wide:
        s = F.embedding_bag(taps.index, table.double(), mode="sum", per_sample_weights=taps.weight)
        s.add_(_HALF).mul_(2.0**-PRECISION_BITS).floor_()
        return s.clamp_(0, 255).float()
    sums = F.embedding_bag(taps.index, table, mode="sum", per_sample_weights=taps.weight)
    high, low = sums[:n], sums[n:]
    # (256*high + low + 2**21) >> 22  ==  floor((high + floor(low / 256) + 2**13) / 2**14), and every
    # step is exact in float32 (power-of-two scaling, floor, sums of integers below 2**24).
    q = low.mul(2.0**-_LOW_BITS).floor_()
    q.add_(high).add_(_HALF >> _LOW_BITS)
    q.mul_(2.0 ** (_LOW_BITS - PRECISION_BITS)).floor_()
    return q.clamp_(0, 255)


def _as_float(a: np.ndarray) -> torch.Tensor:
    # numpy's astype gives a writable copy, so torch can take it without a read-only warning.
    return torch.from_numpy(a.astype(np.float32))


@functools.cache
def _pillow_may_go_vertical_first() -> bool:
    """Whether the installed Pillow runs the vertical pass first for tall shrinks (Pillow >= 13 does).

    Asked of Pillow itself: a 5x64 pattern shrunk to 9x16 only matches the vertical-first result then.
    """
    src = Image.frombytes("L", (5, 64), bytes((i * 97 + i * i * 31) % 256 for i in range(5 * 64)))
    both = np.asarray(src.resize((9, 16), Image.Resampling.BICUBIC))
    v_first = np.asarray(src.resize((5, 16), Image.Resampling.BICUBIC).resize((9, 16), Image.Resampling.BICUBIC))
    return bool(np.array_equal(both, v_first))


def horizontal_first(in_size: tuple[int, int], out_size: tuple[int, int]) -> bool:
    """Pillow's pass order. Pillow 13 goes vertical first when the height shrinks by more than
    twice as many pixels as the width; earlier versions always go horizontal first."""
    (w, h), (out_w, out_h) = in_size, out_size
    tall_shrink = h - out_h > 0 and h - out_h > (w - out_w) * 2
    return not (tall_shrink and _pillow_may_go_vertical_first())


def _source(image: Image.Image, box: tuple[int, int, int, int], mode: str) -> Image.Image:
    w, h = image.size
    src = image if box == (0, 0, w, h) else image.crop(box)
    return src if src.mode == mode else src.convert(mode)


def _transposed_source(image: Image.Image, box: tuple[int, int, int, int], mode: str) -> torch.Tensor:
    """Source pixels in `box` as float32 (cols, rows * bands): one table row per source column.

    Pillow's transpose is the fastest way there (cache-blocked, on its 4-byte pixels).
    """
    columns = np.asarray(_source(image, box, mode).transpose(Image.Transpose.TRANSPOSE))
    return _as_float(columns).view(box[2] - box[0], -1)


def _horizontal_first(
    image: Image.Image, box: tuple[int, int, int, int], mode: str, xt: AxisTaps, yt: AxisTaps | None
) -> torch.Tensor:
    """Horizontal pass from the source, then vertical: (kept rows, bands * kept cols), rows outermost.

    The horizontal pass gives (kept cols, rows * bands); one 2-D transpose (torch's blocked copy)
    turns it into (rows, bands * kept cols), the table the vertical pass needs. Big sources go in
    strips of rows, which keeps each float table in cache and avoids fresh, page-faulting buffers.
    """
    c0, r0, c1, r1 = box
    rows, bands = r1 - r0, Image.getmodebands(mode)
    step = max(64, _STRIP_FLOATS // ((c1 - c0) * bands))
    if step >= rows:
        lines = resample_rows(_transposed_source(image, box, mode), xt).t().contiguous()
    else:
        lines = torch.empty(rows * bands, xt.count)
        for r in range(0, rows, step):
            strip = (c0, r0 + r, c1, min(r1, r0 + r + step))
            lines[r * bands : (strip[3] - r0) * bands] = resample_rows(_transposed_source(image, strip, mode), xt).t()
    lines = lines.view(rows, bands * xt.count)
    return resample_rows(lines, yt) if yt is not None else lines


def resize_window(
    image: Image.Image,
    size: tuple[int, int],
    window: tuple[int, int, int, int],
    filter: str,
    mode: str | None = None,
) -> torch.Tensor:
    """Pixels `window` = (x0, y0, x1, y1) of `image.resize(size, filter)`, for an 8-bit mode.

    mode: resample in this mode (e.g. 'RGBa', as Pillow does for RGBA); only the source pixels the
    window reads are converted. Returns float32 (bands, y1 - y0, x1 - x0), channels first (often a
    strided view), holding the exact uint8 values Pillow gives, in that mode.
    """
    (w, h), (out_w, out_h) = image.size, size
    x0, y0, x1, y1 = window
    nx, ny = x1 - x0, y1 - y0
    mode = mode or image.mode
    bands = Image.getmodebands(mode)
    # Pillow skips a pass whose size does not change; so do we (the pass would be the identity anyway).
    xt = axis_taps(w, out_w, x0, x1, filter) if out_w != w else None
    yt = axis_taps(h, out_h, y0, y1, filter) if out_h != h else None
    c0, c1 = (xt.first, xt.stop_src) if xt else (x0, x1)
    r0, r1 = (yt.first, yt.stop_src) if yt else (y0, y1)
    box = (c0, r0, c1, r1)
    if xt is not None and horizontal_first(image.size, size):
        return _horizontal_first(image, box, mode, xt, yt).view(ny, bands, nx).transpose(0, 1)
    # Natural layout: the vertical pass (if any) first, on (rows, cols * bands).
    pixels = _as_float(np.asarray(_source(image, box, mode))).view(r1 - r0, -1)
    if yt is not None:
        pixels = resample_rows(pixels, yt)
    if xt is None:
        return pixels.view(ny, nx, bands).permute(2, 0, 1)
    columns = pixels.view(ny, c1 - c0, bands).transpose(0, 1).reshape(c1 - c0, ny * bands)
    return resample_rows(columns, xt).view(nx, ny, bands).permute(2, 1, 0)


# (source w, h) -> (output w, h): shrinks, growths, one-pass resizes, and both sides of Pillow 13's
# pass-order rule (vertical first iff the height shrinks by more than twice as many pixels as the width).
_SELF_CHECK = (((37, 29), (16, 11)), ((13, 9), (31, 40)), ((40, 30), (40, 17)), ((40, 30), (23, 30)),
               ((9, 70), (17, 20)), ((30, 70), (20, 50)), ((30, 70), (20, 49)), ((64, 20), (9, 33)))


@functools.cache
def matches_pillow() -> bool:
    """Whether this module reproduces the installed Pillow's resize exactly (checked once).

    It re-implements Pillow internals; a future Pillow that changed them would make it differ, and
    callers then fall back to Pillow's own resize.
    """
    with one_torch_thread():
        return _self_check()


def _self_check() -> bool:
    rng = np.random.default_rng(0)
    for (w, h), size in _SELF_CHECK:
        for mode in ("L", "RGB"):
            image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
            for name, pil in (("bicubic", Image.Resampling.BICUBIC), ("bilinear", Image.Resampling.BILINEAR),
                              ("box", Image.Resampling.BOX)):
                want = np.asarray(image.resize(size, pil)).reshape(size[1], size[0], -1)
                got = resize_window(image, size, (0, 0, *size), name).permute(1, 2, 0).numpy()
                if not np.array_equal(got, want.astype(np.float32)):
                    return False
    return True

