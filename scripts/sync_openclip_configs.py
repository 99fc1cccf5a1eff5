"""Write OpenCLIP's model configs into spec/model_configs/ as package data.

The built-in config set is the reference's own JSON files (open-clip-torch, MIT licence), copied byte for
byte from the installed package so that `spec.list_models()` offers exactly what `open_clip.list_models()`
does. Re-run after upgrading open-clip-torch:

    python scripts/sync_openclip_configs.py
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "spec" / "model_configs"


def main() -> int:
    import open_clip  # the reference; only this script needs it

    source = Path(open_clip.__file__).parent / "model_configs"
    files = sorted(source.glob("*.json"))
    for old in TARGET.glob("*.json"):
        old.unlink()
    TARGET.mkdir(parents=True, exist_ok=True)
    for f in files:
        json.loads(f.read_text(encoding="utf-8"))  # refuse to ship a broken file
        shutil.copyfile(f, TARGET / f.name)
    version = importlib.metadata.version("open-clip-torch")
    (TARGET / "SOURCE.txt").write_text(
        f"The {len(files)} JSON files here are the model configs of open-clip-torch {version}\n"
        "(https://github.com/mlfoundations/open_clip, MIT licence, Copyright (c) 2012-2021 Gabriel Ilharco,\n"
        "Mitchell Wortsman, Nicholas Carlini, Rohan Taori, Achal Dave, Vaishaal Shankar, John Miller,\n"
        "Hongseok Namkoong, Hannaneh Hajishirzi, Ali Farhadi, Ludwig Schmidt),\n"
        "copied unchanged by scripts/sync_openclip_configs.py.\n",
        encoding="utf-8",
    )
    write_shape_index()
    print(f"wrote {len(files)} configs from open-clip-torch {version} to {TARGET}, and their shape index")
    return 0


def write_shape_index() -> None:
    """spec/data/shape_index.json: which configs share which state-dict shapes (read by `infer_config`)."""
    sys.path.insert(0, str(TARGET.parent.parent))
    from spec.registry import _SHAPE_INDEX, build_shape_index

    _SHAPE_INDEX.write_text(json.dumps(build_shape_index(), indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
