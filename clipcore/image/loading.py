"""Opening image files: every failure becomes an ImageError that names the file and the cause."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Union

from PIL import Image, ImageOps, UnidentifiedImageError

from spec.errors import ClipcoreError, ImageError

PathLike = Union[str, "os.PathLike[str]"]

_ORIENTATION = 0x0112  # EXIF tag
_SWAPS_AXES = {5, 6, 7, 8}  # orientations that transpose width and height


def describe(image: Image.Image) -> str:
    """A short name for an in-memory image, for error messages."""
    where = getattr(image, "filename", "") or ""
    size = "x".join(str(s) for s in image.size)
    return f"image ({image.mode} {size}{', from ' + repr(where) if where else ''})"


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = as stored); 1 when there is none or it cannot be read."""
    try:
        value = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # a broken EXIF block only means there is no usable orientation
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_exif_orientation(image: Image.Image, name: str) -> Image.Image:
    """The image turned upright per its EXIF orientation (the image itself when already upright)."""
    if orientation(image) == 1:
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception as e:
        raise ImageError(f"{name}: cannot apply its EXIF orientation ({type(e).__name__}: {e})",
                         fix="pass exif_transpose=False, or fix the file's EXIF data") from e


def check_not_empty(size: tuple[int, int], name: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError(f"{name} has zero size ({w}x{h})", fix="skip this image; it holds no pixels")


def check_size(size: tuple[int, int], name: str) -> None:
    """Zero-size images and decompression bombs (Pillow's MAX_IMAGE_PIXELS) are refused."""
    check_not_empty(size, name)
    w, h = size
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and w * h > limit:
        raise ImageError(
            f"{name} is {w}x{h} = {w * h} pixels, above Pillow's decompression-bomb limit of {limit}",
            fix="if you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS (or set it to None)",
        )


def open_image(
    path: PathLike,
    *,
    exif_transpose: bool = False,
    draft_size: Callable[[tuple[int, int]], tuple[int, int] | None] | None = None,
) -> Image.Image:
    """Open and fully decode an image file.

    draft_size: given the image's (width, height) as the caller will see it (upright when
    `exif_transpose`), the smallest (width, height) the caller needs, or None. JPEGs are then decoded
    at the coarsest DCT scale (1/2, 1/4, 1/8) that still covers it; other formats ignore it.
    """
    name = repr(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else repr(path)
    try:
        with Image.open(path) as im:
            check_size(im.size, f"image file {name}")
            if draft_size is not None:
                swap = exif_transpose and orientation(im) in _SWAPS_AXES
                need = draft_size(im.size[::-1] if swap else im.size)
                if need is not None:
                    im.draft(None, need[::-1] if swap else need)
            im.load()  # inside the try: truncated and corrupt data fail here
    except ClipcoreError:
        raise
    except FileNotFoundError as e:
        raise ImageError(f"image file {name} does not exist", fix="check the path") from e
    except IsADirectoryError as e:
        raise ImageError(f"image file {name} is a directory", fix="pass the path of an image file") from e
    except PermissionError as e:
        raise ImageError(f"image file {name} cannot be read: permission denied",
                         fix="check the file's permissions") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{name} is not an image file Pillow can read",
                         fix="check that the file is an image (JPEG, PNG, WebP, TIFF, ...)") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"image file {name} is a decompression bomb: {e}",
                         fix="if you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS") from e
    except Exception as e:  # truncated/corrupt data: Pillow raises OSError, SyntaxError, ValueError, ...
        raise ImageError(f"image file {name} cannot be decoded, it is truncated or corrupt "
                         f"({type(e).__name__}: {e})", fix="re-download or re-encode the file") from e
    return apply_exif_orientation(im, f"image file {name}") if exif_transpose else im

