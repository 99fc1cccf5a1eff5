"""Synthetic captioned pictures: coloured shapes on textured backgrounds, to train and to show the demo model.

    rng = numpy.random.default_rng(0)
    scene = random_scene(rng)          # Scene(shape='star', colour='red', size='small', background='striped', ...)
    image = render(scene, 64)          # a 64x64 RGB PIL image
    caption(scene, rng)                # 'a small red star on a striped background' (or a shorter phrasing)

A scene is four attributes a caption can name (shape, colour, size, background texture) plus the nuisances no
caption names (position, rotation, exact tints, stripe period and angle, pixel noise), so a model trained on
the captions has to read the attributes and ignore the rest. Everything is drawn from the numpy Generator
passed in and drawn with Pillow (deterministic), so a seed gives the same pictures on every machine.

Pictures are drawn at 4x the requested size and reduced with a box filter: smooth edges, no aliasing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from clipcore.errors import DataError

__all__ = [
    "BACKGROUNDS",
    "CAPTIONS",
    "COLOURS",
    "SHAPES",
    "SIZES",
    "Scene",
    "caption",
    "class_names",
    "random_scene",
    "render",
    "scenes",
]

SHAPES = ("circle", "square", "triangle", "star", "cross", "heart")
COLOURS = {
    "red": (210, 35, 35),
    "green": (35, 160, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 215, 35),
    "purple": (140, 55, 190),
    "orange": (245, 130, 25),
    "white": (248, 248, 248),
    "black": (18, 18, 18),
}
SIZES = ("small", "large")
BACKGROUNDS = ("plain", "striped", "dotted", "checkered")

# Background tints: muted mid-tones, so every shape colour (white and black included) stands out from them.
_BACKDROPS = ((128, 128, 128), (150, 138, 118), (112, 128, 140), (132, 148, 124), (150, 134, 150), (104, 104, 112))
# The shape's radius as a fraction of the picture's side, per size word.
_RADIUS = {"small": (0.13, 0.2), "large": (0.28, 0.38)}
_SUPERSAMPLE = 4

# Caption phrasings and how often each is used: mostly the full description, sometimes only part of it,
# so that short prompts ("a red circle") mean something to the model too.
CAPTIONS = (
    ("a {size} {colour} {shape} on a {background} background", 4),
    ("a photo of a {size} {colour} {shape} on a {background} background", 2),
    ("a {background} background with a {size} {colour} {shape}", 2),
    ("a {colour} {shape} on a {background} background", 2),
    ("a {size} {colour} {shape}", 1),
    ("a {colour} {shape}", 1),
    ("a picture of a {colour} {shape}", 1),
)
_CAPTION_WEIGHTS = np.array([w for _, w in CAPTIONS], dtype=np.float64) / sum(w for _, w in CAPTIONS)


@dataclass(frozen=True)
class Scene:
    """One picture's content: the named attributes, then the nuisances (fractions of the picture's side)."""

    shape: str
    colour: str
    size: str
    background: str
    x: float  # the shape's centre
    y: float
    radius: float
    angle: float  # degrees
    tint: tuple[int, int, int]  # the shape's exact colour
    backdrop: tuple[int, int, int]  # the background's two tones
    backdrop2: tuple[int, int, int]
    period: float  # of stripes, dots and checks
    texture_angle: float  # degrees
    phase: float
    noise: int  # seed of the pixel noise

    @property
    def label(self) -> str:
        """The colour-and-shape class, e.g. 'red circle'."""
        return f"{self.colour} {self.shape}"

    @property
    def description(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} on a {self.background} background"


def class_names() -> list[str]:
    """The colour-and-shape classes the demo model tells apart: 'red circle', ..., 'black heart' (48)."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def _jitter(rgb: Sequence[int], rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.asarray(rgb) + rng.integers(-amount, amount + 1, 3), 0, 255))


def random_scene(
    rng: np.random.Generator,
    shape: str | None = None,
    colour: str | None = None,
    size: str | None = None,
    background: str | None = None,
) -> Scene:
    """A scene with random attributes (or the ones given) and random nuisances."""
    for name, value, allowed in (("shape", shape, SHAPES), ("colour", colour, tuple(COLOURS)), ("size", size, SIZES),
                                 ("background", background, BACKGROUNDS)):
        if value is not None and value not in allowed:
            raise DataError(f"{name} {value!r} is not one the pictures can show", fix=f"use one of {list(allowed)}")
    shape = shape or SHAPES[int(rng.integers(len(SHAPES)))]
    colour = colour or list(COLOURS)[int(rng.integers(len(COLOURS)))]
    size = size or SIZES[int(rng.integers(len(SIZES)))]
    background = background or BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    radius = float(rng.uniform(*_RADIUS[size]))
    margin = radius * 1.05
    backdrop = _jitter(_BACKDROPS[int(rng.integers(len(_BACKDROPS)))], rng, 10)
    shade = float(rng.choice([0.7, 1.3]))
    backdrop2 = tuple(int(np.clip(v * shade, 60, 200)) for v in backdrop)
    return Scene(
        shape=shape,
        colour=colour,
        size=size,
        background=background,
        x=float(rng.uniform(margin, 1 - margin)),
        y=float(rng.uniform(margin, 1 - margin)),
        radius=radius,
        angle=float(rng.uniform(-20, 20)),
        tint=_jitter(COLOURS[colour], rng, 18),
        backdrop=backdrop,
        backdrop2=backdrop2,
        period=float(rng.uniform(0.1, 0.22)),
        texture_angle=float(rng.choice([0.0, 45.0, 90.0, 135.0])),
        phase=float(rng.uniform(0, 1)),
        noise=int(rng.integers(2**31)),
    )


def scenes(seed: int, n: int, **attributes: str) -> list[Scene]:
    """`n` random scenes from `seed` (attributes given as keywords are fixed)."""
    rng = np.random.default_rng(seed)
    return [random_scene(rng, **attributes) for _ in range(n)]


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One of the caption phrasings (drawn from `rng`) filled in with the scene's attributes."""
    template = CAPTIONS[int(rng.choice(len(CAPTIONS), p=_CAPTION_WEIGHTS))][0]
    return template.format(size=scene.size, colour=scene.colour, shape=scene.shape, background=scene.background)


# --- drawing ------------------------------------------------------------------------------------------------


def _outline(shape: str) -> np.ndarray:
    """The shape's outline as (N, 2) points within the unit circle, centred on 0, pointing up."""
    if shape == "circle":
        t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], axis=1)
    if shape == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.78
    if shape == "triangle":
        t = np.radians([-90, 30, 150])
        return np.stack([np.cos(t), np.sin(t) + 0.15], axis=1)
    if shape == "star":
        t = np.radians(np.arange(10) * 36 - 90)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([r * np.cos(t), r * np.sin(t) + 0.08], axis=1)
    if shape == "cross":
        a, b = 0.3, 0.95
        return np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a],
                         [-b, a], [-b, -a], [-a, -a]])
    if shape == "heart":
        t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))  # image y points down
        return np.stack([x, y + 2.5], axis=1) / 17.5
    raise ValueError(f"unknown shape {shape!r}")


def _texture(scene: Scene, side: int) -> np.ndarray:
    """The background as a (side, side) bool mask: True where the second tone goes."""
    if scene.background == "plain":
        return np.zeros((side, side), dtype=bool)
    pos = ((np.arange(side, dtype=np.float32) + 0.5) / (side * scene.period)).astype(np.float32)
    x, y = pos[None, :], pos[:, None]
    cos, sin = math.cos(math.radians(scene.texture_angle)), math.sin(math.radians(scene.texture_angle))
    u = x * np.float32(cos) + y * np.float32(sin) + np.float32(scene.phase)
    if scene.background == "striped":
        return (u % 1.0) < 0.5
    v = y * np.float32(cos) - x * np.float32(sin) + np.float32(scene.phase)
    if scene.background == "checkered":
        return (np.floor(u) + np.floor(v)) % 2 == 0
    if scene.background == "dotted":
        return np.hypot(u % 1.0 - 0.5, v % 1.0 - 0.5) < 0.24
    raise ValueError(f"unknown background {scene.background!r}")


def render(scene: Scene, size: int = 64) -> Image.Image:
    """The scene as a `size` x `size` RGB picture."""
    side = size * _SUPERSAMPLE
    tones = np.array([scene.backdrop, scene.backdrop2], dtype=np.uint8)
    canvas = Image.fromarray(tones[_texture(scene, side).view(np.uint8)], "RGB")
    theta = math.radians(0.0 if scene.shape == "circle" else scene.angle)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    points = _outline(scene.shape) @ rotation.T * scene.radius + np.array([scene.x, scene.y])
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in (points * side).tolist()], fill=scene.tint)
    small = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.int16)
    noise = np.random.default_rng(scene.noise).integers(-6, 7, small.shape, dtype=np.int16)
    return Image.fromarray(np.clip(small + noise, 0, 255).astype(np.uint8), "RGB")
