"""The known-checkpoint registry: where the released OpenAI CLIP weights live, as data.

Each OpenAI URL carries the file's SHA-256 as its second-to-last path segment, so the hash is never
stored twice. The original host (openaipublic.azureedge.net) no longer serves the files; a mirror with the
same paths works by passing another `base_url` (clipcore.download reads `CLIPCORE_MIRROR` for it).
"""

from __future__ import annotations

from dataclasses import dataclass

from spec.errors import UnknownModelError

__all__ = ["OPENAI_BASE_URL", "KnownCheckpoint", "available_models", "get_checkpoint"]

OPENAI_BASE_URL = "https://openaipublic.azureedge.net/clip/models"


@dataclass(frozen=True)
class KnownCheckpoint:
    """One released checkpoint: `path` is relative to the base URL, `architecture` a built-in config name."""

    name: str
    path: str
    architecture: str

    @property
    def sha256(self) -> str:
        return self.path.split("/")[-2]

    @property
    def filename(self) -> str:
        return self.path.split("/")[-1]

    def url(self, base_url: str | None = None) -> str:
        return f"{(base_url or OPENAI_BASE_URL).rstrip('/')}/{self.path}"


# name -> (sha256/filename, architecture config). Order is OpenAI's `available_models()` order.
_OPENAI = {
    "RN50": ("afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt", "RN50"),
    "RN101": ("8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt", "RN101"),
    "RN50x4": ("7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt", "RN50x4"),
    "RN50x16": ("52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt", "RN50x16"),
    "RN50x64": ("be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt", "RN50x64"),
    "ViT-B/32": ("40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt", "ViT-B-32"),
    "ViT-B/16": ("5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt", "ViT-B-16"),
    "ViT-L/14": ("b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt", "ViT-L-14"),
    "ViT-L/14@336px": (
        "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
        "ViT-L-14-336",
    ),
}

_CHECKPOINTS = {name: KnownCheckpoint(name, path, arch) for name, (path, arch) in _OPENAI.items()}


def available_models() -> list[str]:
    """The nine OpenAI model names, in the order OpenAI's `clip.available_models()` gives them."""
    return list(_CHECKPOINTS)


def get_checkpoint(name: str) -> KnownCheckpoint:
    """The registry entry for a known name; a clear error listing the known names otherwise."""
    try:
        return _CHECKPOINTS[name]
    except KeyError:
        raise UnknownModelError(
            f"no released checkpoint is called {name!r}",
            fix=f"use one of {available_models()} or pass the path of a checkpoint file",
        ) from None
