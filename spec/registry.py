"""The model-config registry: OpenCLIP's built-in JSON configs, OpenAI's nine names, and user configs.

Built-in configs are package data (`spec/model_configs/*.json`, written by scripts/sync_openclip_configs.py
from the installed reference). OpenAI's names (`ViT-B/32`, `RN50`, ...) resolve to the same architecture
with QuickGELU, the activation OpenAI trained with. `add_model_config` registers a user's JSON file or
folder of files (same schema, validated on the spot) for this process.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from functools import cache
from pathlib import Path

from spec.checkpoints import available_models, get_checkpoint
from spec.config import ClipConfig
from spec.errors import ConfigError, UnknownModelError, UnsupportedModelError
from spec.shapes import Shapes, shapes_of

__all__ = [
    "add_model_config",
    "build_shape_index",
    "builtin_configs",
    "configs_with_shapes_of",
    "get_model_config",
    "list_models",
    "openai_config",
    "shapes_digest",
]

_BUILTIN_DIR = Path(__file__).resolve().parent / "model_configs"
# Fingerprint of each built-in config's state-dict shapes -> config names (written by
# scripts/sync_openclip_configs.py; a test keeps it equal to build_shape_index()). Parsing all the configs and
# computing their shapes on the first load of a process would cost ~0.1 s; the index costs one small read.
_SHAPE_INDEX = Path(__file__).resolve().parent / "data" / "shape_index.json"
_user_configs: dict[str, ClipConfig] = {}


def _natural_key(name: str) -> list:
    # Same order as open_clip.list_models(): digits compare as numbers, case-insensitively.
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name.lower())]


def _read_config_file(path: Path) -> ClipConfig:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read model config {str(path)!r}: {e}", fix="fix or remove the file") from None
    try:
        return ClipConfig.from_openclip(data)
    except ConfigError as e:
        raise ConfigError(f"model config {str(path)!r}: {e.problem}", fix=e.fix) from None


@cache
def _builtin_names() -> tuple[str, ...]:
    return tuple(sorted((p.stem for p in _BUILTIN_DIR.glob("*.json")), key=_natural_key))


@cache
def _builtin_config(name: str) -> ClipConfig:
    return _read_config_file(_BUILTIN_DIR / f"{name}.json")


def builtin_configs() -> dict[str, ClipConfig]:
    """The configs open-clip-torch ships, by name, in OpenCLIP's order. Constant data."""
    return {name: _builtin_config(name) for name in _builtin_names()}


def list_models() -> list[str]:
    """Every config name known in this process: the built-in ones and those added with `add_model_config`."""
    return sorted({*_builtin_names(), *_user_configs}, key=_natural_key)


def add_model_config(path: str | Path) -> list[str]:
    """Register a JSON model config file, or every `*.json` in a folder; returns the names added.

    A later config with the same name replaces an earlier one (as in OpenCLIP). Unlike OpenCLIP, a path that
    does not exist, or a file that is not a valid config, is an error rather than silently ignored.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise ConfigError(f"no *.json model configs in folder {str(path)!r}", fix="point to a config file")
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"model config path {str(path)!r} does not exist", fix="check the path")
    parsed = {f.stem: _read_config_file(f) for f in files}  # all or nothing
    _user_configs.update(parsed)
    return list(parsed)


def get_model_config(name: str) -> ClipConfig:
    """The config of an added or built-in OpenCLIP model name (`/` is read as `-`, as OpenCLIP does).

    Note that OpenCLIP's `RN50` or `ViT-B-32` use GELU; OpenAI's released models of the same names used
    QuickGELU: `openai_config(name)` gives those.
    """
    return _lookup(name.replace("/", "-"))


def openai_config(name: str) -> ClipConfig:
    """The architecture of one of OpenAI's nine released models (`ViT-B/32`, `RN50`, ...): QuickGELU."""
    return _lookup(get_checkpoint(name).architecture).replace(quick_gelu=True)


def _lookup(name: str) -> ClipConfig:
    if name in _user_configs:
        return _user_configs[name]
    if name in _builtin_names():
        return _builtin_config(name)
    close = difflib.get_close_matches(name, list_models() + available_models(), n=3)
    raise UnknownModelError(
        f"no model config is called {name!r}",
        fix=(f"did you mean {close}? " if close else "") + "see spec.list_models(), or add_model_config(path)",
    )


def shapes_digest(shapes: Shapes) -> str:
    """A fingerprint of a state dict's keys and shapes, independent of key order."""
    text = "\n".join(f"{key}:{','.join(map(str, shape))}" for key, shape in sorted(shapes.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def build_shape_index() -> dict[str, list[str]]:
    """Shapes fingerprint -> the built-in configs with those shapes (what data/shape_index.json holds)."""
    index: dict[str, list[str]] = {}
    for name, config in builtin_configs().items():
        try:
            digest = shapes_digest(shapes_of(config))
        except UnsupportedModelError:  # timm / Hugging Face / CoCa towers have no spec-level shapes
            continue
        index.setdefault(digest, []).append(name)
    return index


@cache
def _shape_index() -> dict[str, list[str]]:
    try:
        return json.loads(_SHAPE_INDEX.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"cannot read the built-in configs' shape index {str(_SHAPE_INDEX)!r}: {e}",
            fix="reinstall clipcore, or regenerate it with scripts/sync_openclip_configs.py",
        ) from None


def configs_with_shapes_of(config: ClipConfig) -> list[ClipConfig]:
    """The built-in configs whose state dicts have exactly the keys and shapes of `config`'s."""
    shapes = shapes_of(config)
    candidates = [_builtin_config(name) for name in _shape_index().get(shapes_digest(shapes), [])]
    return [c for c in candidates if shapes_of(c) == shapes]  # the fingerprint narrows; equality decides
