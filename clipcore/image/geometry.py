"""Where the reference eval pipelines put the image: the resize size, then the pad/crop window.

The arithmetic follows torchvision's `Resize` (shortest-edge rule), open_clip's `ResizeKeepRatio`
(ratio rule, Python's round-half-even) and `CenterCrop` / `CenterCropOrPad` (pad first, extra pixel
on the right/bottom, then crop at `round((size - target) / 2)`), float for float, so the sizes and
offsets are the same integers the references compute.
"""

from __future__ import annotations

from dataclasses import dataclass

from spec.errors import ConfigError

RESIZE_MODES = ("shortest", "longest", "squash")
# Interpolation name -> resampling filter. open_clip accepts bicubic, bilinear and random (which means
# bicubic for evaluation); torchvision's Resize also has the other Pillow filters.
INTERPOLATIONS = {"bicubic": "bicubic", "bilinear": "bilinear", "random": "bicubic", "nearest": "nearest",
                  "box": "box", "hamming": "hamming", "lanczos": "lanczos"}


@dataclass(frozen=True)
class Layout:
    """How one source image becomes the output.

    resized: (width, height) after the resize step (the source size when there is no resize).
    filter: the resampling filter of the resize step.
    offset: (x, y) of the output's top-left pixel in resized coordinates; negative where the
        reference pads. Output pixel (row i, col j) is resized[offset_y + i, offset_x + j], or the
        fill value where that falls outside the resized image.
    out: (width, height) of the output.
    """

    resized: tuple[int, int]
    filter: str
    offset: tuple[int, int]
    out: tuple[int, int]

    def window(self) -> tuple[int, int, int, int]:
        """The part of the resized image that reaches the output, as (x0, y0, x1, y1)."""
        (ox, oy), (ow, oh), (rw, rh) = self.offset, self.out, self.resized
        return max(0, ox), max(0, oy), min(rw, ox + ow), min(rh, oy + oh)

    def pads(self) -> bool:
        """True when some output pixels are fill (the resized image does not cover the output)."""
        x0, y0, x1, y1 = self.window()
        return (x1 - x0, y1 - y0) != self.out


def target_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """(height, width) from an int or an (h, w) pair, as open_clip accepts them."""
    if isinstance(image_size, bool):
        raise ConfigError(f"image_size must be an int or an (height, width) pair, got {image_size!r}")
    if isinstance(image_size, int):
        size = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) in (1, 2):
        size = (image_size[0], image_size[-1])
    else:
        raise ConfigError(
            f"image_size must be an int or an (height, width) pair, got {image_size!r}",
            fix="pass e.g. 224 or (224, 224)",
        )
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ConfigError(f"image_size must hold positive ints, got {image_size!r}")
    return size


def _shortest_edge(w: int, h: int, n: int) -> tuple[int, int]:
    # torchvision Resize(n): the short side becomes n, the long side int(n * long / short).
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(n * long / short)
    return (n, new_long) if w <= h else (new_long, n)


def _keep_ratio(w: int, h: int, th: int, tw: int, longest: bool) -> tuple[int, int]:
    # open_clip ResizeKeepRatio: one ratio for both sides; the max*1/min*0 blend reduces to max or min.
    ratio_h, ratio_w = h / th, w / tw
    ratio = max(ratio_h, ratio_w) if longest else min(ratio_h, ratio_w)
    # A side can round to 0 on very thin images; the reference then fails inside Pillow. We keep 1 pixel.
    return max(1, round(w / ratio)), max(1, round(h / ratio))


def _center_offset(resized: int, target: int) -> int:
    if target > resized:  # padded: the left/top pad is the smaller half
        return -((target - resized) // 2)
    return round((resized - target) / 2.0)


def plan(src_size: tuple[int, int], target: tuple[int, int], resize_mode: str, interpolation: str) -> Layout:
    """The layout of the reference eval transform for a source of (width, height) `src_size`.

    `target` is (height, width); `interpolation` is a key of INTERPOLATIONS.
    """
    w, h = src_size
    th, tw = target
    filt = INTERPOLATIONS[interpolation]
    if resize_mode == "squash":
        resized = (tw, th)
    elif resize_mode == "longest":
        resized = _keep_ratio(w, h, th, tw, longest=True)
    elif th == tw:
        resized = _shortest_edge(w, h, th)
    else:
        # open_clip's non-square 'shortest' builds ResizeKeepRatio with its default: always bicubic.
        resized, filt = _keep_ratio(w, h, th, tw, longest=False), "bicubic"
    offset = (_center_offset(resized[0], tw), _center_offset(resized[1], th))
    return Layout(resized=resized, filter=filt, offset=offset, out=(tw, th))
