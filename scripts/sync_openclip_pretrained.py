"""Write OpenCLIP's pretrained-weights registry into spec/data/openclip_pretrained.json as package data.

Reads the installed reference's registry (open-clip-torch's `open_clip.pretrained`, including the
`<model>-quickgelu` aliases it derives at import) and writes one record per (model, tag) pair, in the
reference's order, with what a loader needs to find the file offline: the URL and its file name, the
SHA-256 (or the prefix of it) the URL carries, the Hugging Face hub repository and file, the preprocessing
(mean, std, interpolation, resize mode) and the activation. Re-run after upgrading open-clip-torch:

    python scripts/sync_openclip_pretrained.py
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "spec" / "data" / "openclip_pretrained.json"

# Where a URL carries the hash of its file (the reference checks that the file's sha256 starts with it).
HASH_IN_URL = (
    (re.compile(r"^https://openaipublic\.azureedge\.net/clip/models/([0-9a-f]{64})/"), "full"),  # dir name
    (re.compile(r"^https://github\.com/mlfoundations/.*-([0-9a-f]{8})\.[a-z]+$"), "prefix"),  # file-stem suffix
)


def url_sha256(url: str) -> str | None:
    for pattern, _ in HASH_IN_URL:
        match = pattern.match(url)
        if match:
            return match.group(1)
    return None


def record(cfg: dict) -> dict:
    """One registry entry in our schema (see spec/pretrained.py)."""
    repo, _, filename = cfg.get("hf_hub", "").rpartition("/") if cfg.get("hf_hub") else ("", "", "")
    return {
        "url": cfg.get("url") or None,
        "sha256": url_sha256(cfg.get("url") or ""),
        "hf_repo": repo or None,
        "hf_file": filename or None,  # None: the reference's default weight file names
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
        "interpolation": cfg["interpolation"],
        "resize_mode": cfg["resize_mode"],
        "quick_gelu": bool(cfg.get("quick_gelu", False)),
    }


def main() -> int:
    import open_clip.pretrained as reference  # only this script needs the reference

    unknown = {key for tags in reference._PRETRAINED.values() for cfg in tags.values() for key in cfg} - {
        "url", "hf_hub", "mean", "std", "interpolation", "resize_mode", "quick_gelu"}
    if unknown:
        print(f"the reference's registry has fields this script does not know: {sorted(unknown)}", file=sys.stderr)
        return 1
    models = {name: {tag: record(cfg) for tag, cfg in tags.items()} for name, tags in reference._PRETRAINED.items()}
    version = importlib.metadata.version("open-clip-torch")
    data = {
        "source": f"open-clip-torch {version} (open_clip/pretrained.py, MIT licence), "
                  "written by scripts/sync_openclip_pretrained.py",
        "models": models,
    }
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    lines = ['{', f'  "source": {json.dumps(data["source"])},', '  "models": {']
    for i, (name, tags) in enumerate(models.items()):
        lines.append(f"    {json.dumps(name)}: {{")
        for j, (tag, rec) in enumerate(tags.items()):
            comma = "," if j < len(tags) - 1 else ""
            lines.append(f"      {json.dumps(tag)}: {json.dumps(rec)}{comma}")
        lines.append("    }" + ("," if i < len(models) - 1 else ""))
    lines += ["  }", "}", ""]
    TARGET.write_text("\n".join(lines), encoding="utf-8")
    assert json.loads(TARGET.read_text(encoding="utf-8")) == data
    pairs = sum(len(tags) for tags in models.values())
    print(f"wrote {pairs} (model, tag) pairs of {len(models)} models from open-clip-torch {version} to {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
