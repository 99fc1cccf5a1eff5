"""OpenCLIP's tokenizers behind `get_tokenizer`: the CLIP BPE one, and Hugging Face ones (the `hf` extra).

`OpenCLIPTokenizer` is OpenCLIP's SimpleTokenizer call convention on clipcore's Tokenizer: a text too long
is always cut to the context length (its last token becomes the end token), never refused.
`HFTokenizer` wraps `transformers.AutoTokenizer` as OpenCLIP does (text cleaning, padding to the context
length, `strip_sep_token`), reading only files already on this machine.
"""

from __future__ import annotations

import html
import os
import string
from collections.abc import Callable, Iterable

import torch

from clipcore.errors import ConfigError, OfflineError, UnsupportedModelError
from clipcore.tokenizer import CONTEXT_LENGTH, default_tokenizer

__all__ = ["CLEAN_FUNCTIONS", "HFTokenizer", "OpenCLIPTokenizer"]


def _basic(text: str) -> str:
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:  # ftfy is optional (the `ftfy` extra); without it mojibake stays as it is
        pass
    return html.unescape(html.unescape(text)).strip()


def _whitespace(text: str) -> str:
    return " ".join(_basic(text).split())


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _canonical(text: str) -> str:
    """big_vision's canonical form (SigLIP): '_' as space, no punctuation, lower case, single spaces."""
    return " ".join(_basic(text).replace("_", " ").translate(_NO_PUNCTUATION).lower().split())


CLEAN_FUNCTIONS: dict[str, Callable[[str], str]] = {
    "whitespace": _whitespace,
    "lower": lambda text: _whitespace(text).lower(),
    "canonicalize": _canonical,
}


def _texts(texts: str | Iterable[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


class OpenCLIPTokenizer:
    """CLIP's BPE tokenizer with OpenCLIP's SimpleTokenizer interface: `tok(texts, context_length=None)`."""

    def __init__(self, context_length: int = CONTEXT_LENGTH, clean: str = "lower") -> None:
        if clean != "lower":
            raise UnsupportedModelError(
                f"the CLIP BPE tokenizer with clean={clean!r}: clipcore's tokenizer cleans as OpenAI's does "
                "('lower')", fix="use clean='lower' (the default)")
        self.context_length = context_length
        self.tokenizer = default_tokenizer()
        self.vocab_size = self.tokenizer.vocab_size
        self.sot_token_id, self.eot_token_id = self.tokenizer.sot_id, self.tokenizer.eot_id

    def __call__(self, texts: str | Iterable[str], context_length: int | None = None) -> torch.Tensor:
        return self.tokenizer.tokenize(_texts(texts), context_length or self.context_length, truncate=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(ids)


class HFTokenizer:
    """A Hugging Face tokenizer called the way OpenCLIP calls it; offline only."""

    def __init__(
        self,
        tokenizer_name: str | os.PathLike,
        context_length: int = CONTEXT_LENGTH,
        clean: str = "whitespace",
        strip_sep_token: bool = False,
        language: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        tokenizer_mode: str | None = None,
        **kwargs: object,
    ) -> None:
        if clean not in CLEAN_FUNCTIONS:
            raise ConfigError(f"unknown tokenizer clean function {clean!r}", fix=f"use one of {list(CLEAN_FUNCTIONS)}")
        if tokenizer_mode:
            raise UnsupportedModelError(f"tokenizer_mode={tokenizer_mode!r} is not supported by clipcore",
                                        fix="use the standard mode (tokenizer_mode=None)")
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise UnsupportedModelError(
                f"the tokenizer {str(tokenizer_name)!r} is a Hugging Face tokenizer, which needs `transformers`",
                fix="pip install 'clipcore[hf]'",
            ) from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                tokenizer_name, cache_dir=cache_dir, local_files_only=True, **kwargs)
        except OSError as e:
            raise OfflineError(
                f"the Hugging Face tokenizer {str(tokenizer_name)!r} is not on this machine (clipcore never "
                f"downloads): {str(e).splitlines()[0]}",
                fix=f"`huggingface-cli download {tokenizer_name}` on a machine with network access and copy its "
                    "hub cache here (or set HF_HUB_CACHE), or pass a local folder",
            ) from None
        self.context_length = context_length
        self.clean_fn = CLEAN_FUNCTIONS[clean]
        self.strip_sep_token = strip_sep_token
        if language is not None:
            self.set_language(language)

    def set_language(self, language: str) -> None:
        set_lang = getattr(self.tokenizer, "set_src_lang_special_tokens", None)
        if not callable(set_lang):
            raise ConfigError("this tokenizer has no source language to set", fix="drop language=")
        set_lang(language)

    def __call__(self, texts: str | Iterable[str], context_length: int | None = None) -> torch.Tensor:
        ids = self.tokenizer(
            [self.clean_fn(t) for t in _texts(texts)], return_tensors="pt",
            max_length=context_length or self.context_length, padding="max_length", truncation=True,
        ).input_ids
        if self.strip_sep_token:
            ids = ids.masked_fill(ids == self.tokenizer.sep_token_id, 0)
        return ids
