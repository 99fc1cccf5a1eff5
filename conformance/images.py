"""Test images for the preprocessing conformance suite and benchmark, made here (no downloads).

- `photo`: photo-like RGB content (smooth gradients, shapes with edges, sensor-like noise), so JPEG
  files behave like camera pictures rather than pure noise.
- `in_mode`: the same content in any Pillow mode (palette with and without transparency, 16- and
  32-bit integer, float, CMYK, ...).
- `write_files`: one file per format/mode case the loader must handle, including EXIF-rotated and
  CMYK JPEGs and 16-bit/float TIFFs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Modes an in-memory image can have that the reference pipelines accept.
MODES = ("RGB", "RGBA", "LA", "L", "1", "P", "P+transparency", "CMYK", "I;16", "I;16B", "I", "F",
         "RGBX", "YCbCr", "HSV", "LAB", "RGBa", "PA")


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image that looks like a photo to a codec: gradients, a few shapes, mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    phase = rng.uniform(0, 6.28, 3)
    img = np.stack([
        120 + 100 * np.sin(3.0 * u + phase[0]) * np.cos(2.0 * v),
        110 + 90 * np.cos(4.0 * v + phase[1]) * (0.5 + 0.5 * u),
        100 + 80 * np.sin(2.5 * (u + v) + phase[2]),
    ], axis=-1)
    for _ in range(6):  # discs and bars: sharp edges, like objects
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.3) * max(width, height)
        colour = rng.uniform(0, 255, 3)
        if rng.random() < 0.5:
            mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        else:
            mask = (np.abs(x - cx) < r) & (np.abs(y - cy) < r / 3)
        img[mask] = 0.35 * img[mask] + 0.65 * colour
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Uniform random RGB: every pixel independent (the hardest case for rounding)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def in_mode(rgb: Image.Image, mode: str, seed: int = 0) -> Image.Image:
    """`rgb` in `mode`, with a varied alpha for alpha modes and wide value ranges for I/F modes."""
    rng = np.random.default_rng(seed)
    w, h = rgb.size
    if mode in ("RGBA", "LA", "PA", "RGBa"):
        base = rgb.convert("RGBA")
        a = np.asarray(base).copy()
        a[..., 3] = rng.integers(0, 256, (h, w), dtype=np.uint8)  # every alpha level, 0 included
        return Image.fromarray(a, "RGBA").convert(mode)
    if mode == "P":
        return rgb.quantize(colors=200, method=Image.Quantize.MEDIANCUT)
    if mode == "P+transparency":
        im = rgb.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
        im.info["transparency"] = 3
        return im
    grey = np.asarray(rgb.convert("L")).astype(np.int64)
    if mode == "I;16":
        return Image.fromarray((grey * 257).astype(np.uint16))  # mode I;16 (values up to 65535)
    if mode == "I;16B":
        return Image.frombytes("I;16B", (w, h), (grey * 251 + 7).astype(">u2").tobytes())
    if mode == "I":
        return Image.fromarray((grey * 3 - 200).astype(np.int32))  # negatives and > 255: clipped later
    if mode == "F":
        return Image.fromarray(grey.astype(np.float32) * 1.7 - 60.25)
    return rgb.convert(mode)


def write_files(folder: Path, width: int = 320, height: int = 240, seed: int = 0) -> dict[str, Path]:
    """One file per case the loader must handle; returns {case: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = photo(width, height, seed)
    files = {}

    def save(name: str, im: Image.Image, **kw) -> None:
        path = folder / name
        im.save(path, **kw)
        files[name] = path

    save("rgb.jpg", rgb, quality=90)
    save("grey.jpg", rgb.convert("L"), quality=90)
    save("cmyk.jpg", rgb.convert("CMYK"), quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    save("exif_rotated.jpg", rgb, quality=90, exif=exif.tobytes())
    save("rgb.png", rgb)
    save("rgba.png", in_mode(rgb, "RGBA", seed))
    save("la.png", in_mode(rgb, "LA", seed))
    save("l.png", rgb.convert("L"))
    save("bilevel.png", rgb.convert("1"))
    save("palette.png", in_mode(rgb, "P", seed))
    save("palette_transparent.png", in_mode(rgb, "P+transparency", seed))
    save("palette.gif", in_mode(rgb, "P", seed))
    save("i16.tif", in_mode(rgb, "I;16", seed))
    save("i32.tif", in_mode(rgb, "I", seed))
    save("float.tif", in_mode(rgb, "F", seed))
    save("rgb.tif", rgb)
    save("rgb.webp", rgb, quality=90)
    save("rgb.bmp", rgb)
    return files
