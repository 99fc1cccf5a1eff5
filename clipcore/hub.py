"""Finding released OpenCLIP weights already on this machine, never over the network.

Two places are searched, as OpenCLIP's downloads would have filled them:
- the Hugging Face hub cache: `<root>/models--<org>--<name>/snapshots/<revision>/<file>`, where root is
  `cache_dir` when given, else $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub. The snapshot that
  `refs/main` names comes first, then the others, newest first.
- for records with a URL, the URL's file name in `cache_dir`, clipcore's cache ($CLIPCORE_CACHE) and
  ~/.cache/clip (OpenCLIP's and OpenAI's default), checked against the hash the URL carries.
A file found nowhere raises OfflineError saying where it would be and how to get it there.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from clipcore.download import cache_dir as clipcore_cache_dir
from clipcore.errors import ChecksumError, OfflineError
from spec.pretrained import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME, PretrainedCfg

__all__ = ["find_hub_model", "find_in_hub_cache", "find_pretrained", "hub_cache_roots"]

OPENCLIP_URL_CACHE = "~/.cache/clip"


def _unique(paths: Iterable[str | os.PathLike | None]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p:
            path = Path(p).expanduser()
            if path not in out:
                out.append(path)
    return out


def hub_cache_roots(cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """The hub cache folders to search: `cache_dir` alone when given (as huggingface_hub uses it)."""
    if cache_dir:
        return _unique([cache_dir])
    hf_home = os.environ.get("HF_HOME")
    return _unique([os.environ.get("HF_HUB_CACHE"), hf_home and Path(hf_home) / "hub", "~/.cache/huggingface/hub"])


def _snapshots(repo_folder: Path, revision: str | None) -> Iterator[Path]:
    snapshots = repo_folder / "snapshots"
    ref = repo_folder / "refs" / (revision or "main")
    if ref.is_file():
        yield snapshots / ref.read_text(encoding="utf-8").strip()
    elif revision:
        yield snapshots / revision  # a commit hash names its snapshot directly
        return
    if revision is None and snapshots.is_dir():
        yield from sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: -p.stat().st_mtime)


def find_in_hub_cache(
    repo: str, filenames: Iterable[str], cache_dir: str | os.PathLike | None = None, revision: str | None = None
) -> Path | None:
    """The first of `filenames` present in a cached snapshot of hub repository `repo` ('org/name'), or None."""
    names = list(filenames)
    for root in hub_cache_roots(cache_dir):
        folder = root / ("models--" + repo.replace("/", "--"))
        for snapshot in _snapshots(folder, revision):
            for name in names:
                path = snapshot / name
                if path.is_file():
                    return path
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _checked(path: Path, expected: str | None, what: str) -> Path:
    """`path`, once its SHA-256 is known to start with `expected` (the reference's rule)."""
    if expected is not None:
        actual = _sha256(path)
        if not actual.startswith(expected):
            raise ChecksumError(
                f"{path} (for {what}) has SHA-256 {actual}, but its URL says it starts with {expected}",
                fix="delete the file and fetch it again from the URL",
            )
    return path


def find_pretrained(cfg: PretrainedCfg, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local file of a registry record (hub cache first, as the reference prefers the hub); OfflineError."""
    what = f"{cfg.model}:{cfg.tag}"
    if cfg.hf_repo:
        found = find_in_hub_cache(cfg.hf_repo, cfg.hf_files, cache_dir)
        if found is not None:
            return found
    url_dirs = _unique([cache_dir, clipcore_cache_dir(), OPENCLIP_URL_CACHE]) if cfg.url else []
    for folder in url_dirs:
        path = folder / cfg.url_file
        if path.is_file():
            return _checked(path, cfg.sha256, what)
    places = []
    if cfg.hf_repo:
        roots = ", ".join(str(r) for r in hub_cache_roots(cache_dir))
        places.append(f"hub repository {cfg.hf_repo} (file {' or '.join(cfg.hf_files)}) under {roots}")
    if cfg.url:
        places.append(f"{cfg.url_file} in {', '.join(str(d) for d in url_dirs)}")
    fixes = []
    if cfg.hf_repo:
        fixes.append(f"`huggingface-cli download {cfg.hf_repo} {cfg.hf_files[-1]}` on a machine with network "
                     "access, then copy its hub cache here")
    if cfg.url:
        fixes.append(f"download {cfg.url} into {url_dirs[-1]}")
    raise OfflineError(
        f"the weights {what} are not on this machine (clipcore never downloads OpenCLIP weights); looked for "
        + "; ".join(places),
        fix=" or ".join(fixes) + "; or pass pretrained=<path of a checkpoint file>",
    )


def find_hub_model(repo: str, cache_dir: str | os.PathLike | None = None) -> tuple[Path, Path | None]:
    """(open_clip_config.json, weights or None) of an 'hf-hub:' model in the local hub cache; OfflineError."""
    config = find_in_hub_cache(repo, [HF_CONFIG_NAME], cache_dir)
    if config is None:
        roots = ", ".join(str(r) for r in hub_cache_roots(cache_dir))
        raise OfflineError(
            f"hf-hub:{repo}: no {HF_CONFIG_NAME} for it in the local Hugging Face cache ({roots}); clipcore "
            "never downloads",
            fix=f"`huggingface-cli download {repo}` on a machine with network access and copy its hub cache "
                "here (or set HF_HUB_CACHE), or use 'local-dir:<folder>'",
        )
    weights = next((config.parent / n for n in (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME)
                    if (config.parent / n).is_file()), None)
    return config, weights
