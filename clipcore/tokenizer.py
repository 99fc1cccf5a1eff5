"""OpenAI CLIP's byte-level BPE tokenizer, written from scratch: the same ids as `clip.tokenize` for any text.

What happens to a text, step by step, exactly as the reference tokenizer does it:

1. clean: `ftfy.fix_text` (when ftfy is installed), `html.unescape` twice, `strip`, every run of
   whitespace (the `regex` module's `\\s`) becomes one space, `strip`, `lower`;
2. split into tokens with the reference's pattern: the two special-token strings, the contractions
   's 't 're 've 'm 'll 'd, runs of letters, single digits, runs of anything else that is not space.
   The pattern is compiled by `regex` with IGNORECASE over `\\p{L}`/`\\p{N}`; the standard `re` has neither,
   so the classes ship as code-point range tables generated from `regex` itself (data/unicode_tables.json,
   made by data/make_unicode_tables.py; see there for the Unicode version);
3. each token becomes its UTF-8 bytes, one printable character per byte, then BPE merges, then ids.
   Rows are `[49406] + ids + [49407]`, zero-padded to the context length.

Without ftfy (the optional extra `clipcore[ftfy]`) step 1 skips `fix_text`, and these inputs can then get
other ids than the reference's (checked in conformance/test_tokenizer.py):
  - mojibake: "cafÃ©" is not repaired to "café" (and a lone U+0085 is not read as a mangled "…");
  - curly quotes and apostrophes: "don’t" keeps ’, so it does not split as don + 't;
  - ligatures (ﬁ), full-width and other compatibility forms (ＡＢＣ), text not in NFC (e + U+0301);
  - control characters (U+0000..U+0008, U+000B, U+000E..U+001F, U+007F), the BOM U+FEFF and terminal escape
    sequences, which ftfy deletes (note U+001C..U+001F are not whitespace for the reference's `\\s`);
  - HTML entities nested more than twice ("&amp;amp;amp;"): ftfy unescapes until nothing changes (on lines
    without '<'), the two `html.unescape` calls stop after two levels;
  - lone surrogates: ftfy replaces them with U+FFFD; without it they have no UTF-8 bytes and raise TextError.
Printable ASCII without '&' (most captions) is never affected.

Speed: printable ASCII without '&' skips ftfy and HTML unescaping, which provably leave it unchanged
(conformance/test_tokenizer.py checks the claim); tokens are cached (bounded); merges use a rank dict.
"""

from __future__ import annotations

import gzip
import html
import json
import operator
import re
import threading
from collections.abc import Callable, Iterable
from functools import cache
from itertools import chain, pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipcore.errors import DataError, TextError

if TYPE_CHECKING:
    import torch

DATA_DIR = Path(__file__).with_name("data")
VOCAB_PATH = DATA_DIR / "bpe_simple_vocab_16e6.txt.gz"
TABLES_PATH = DATA_DIR / "unicode_tables.json"

SOT_TOKEN, EOT_TOKEN = "<|startoftext|>", "<|endoftext|>"
SOT_ID, EOT_ID = 49406, 49407
VOCAB_SIZE = 49408
N_MERGES = VOCAB_SIZE - 2 * 256 - 2  # the reference keeps the first 48,894 merges of the file
CONTEXT_LENGTH = 77

# The fixed strings of the reference pattern, in its order; matched case-insensitively like `regex` does.
SPECIAL_TOKENS = (SOT_TOKEN, EOT_TOKEN)
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
LITERAL_TOKENS = SPECIAL_TOKENS + CONTRACTIONS

DEFAULT_CACHE_SIZE = 100_000


# ---------------------------------------------------------------------------------------------------------
# The token pattern, rebuilt for the standard `re` from the shipped tables

def _parse_ranges(text: str) -> list[tuple[int, int]]:
    """'41-5a 61-7a aa' (hex) -> [(0x41, 0x5A), (0x61, 0x7A), (0xAA, 0xAA)]."""
    out = []
    for item in text.split():
        first, _, last = item.partition("-")
        out.append((int(first, 16), int(last or first, 16)))
    return out


def _char_class(ranges: list[tuple[int, int]], lo: int = 0, hi: int = 0x10FFFF) -> str:
    """An `re` character class of the ranges, clipped to lo..hi (nothing left: a class that matches nothing)."""
    parts = []
    for a, b in ranges:
        a, b = max(a, lo), min(b, hi)
        if a <= b:
            parts.append(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}")
    return "[" + "".join(parts) + "]" if parts else r"[^\x00-\U0010ffff]"


class _Patterns:
    """The compiled pieces of the tokenizer that depend only on the Unicode tables."""

    def __init__(self, tables: dict) -> None:
        classes = {name: _parse_ranges(text) for name, text in tables["classes"].items()}
        variants = {c: _parse_ranges(text) for c, text in tables["case_variants"].items()}
        self.unicode_version: str = tables["unicode_version"]
        self.regex_version: str = tables["regex_version"]

        # Each literal character becomes the class of the characters `regex` IGNORECASE matches for it.
        def literal(token: str) -> str:
            return "".join(_char_class(variants[c]) for c in token)

        head = "|".join(literal(t) for t in LITERAL_TOKENS)
        letter, number, other = classes["letter"], classes["number"], classes["other"]
        # `re` compiles the BMP part of a class to an O(1) bitmap but tests code points above U+FFFF
        # against a linear list of ranges, which every BMP miss also walks. So: one pattern from the BMP
        # halves for texts without astral characters (exact there: membership of a BMP character only
        # depends on the BMP half), and one that only consults the astral halves for astral characters.
        bmp = {name: _char_class(r, 0, 0xFFFF) for name, r in (("L", letter), ("N", number), ("O", other))}
        astral = {name: _char_class(r, 0x10000) for name, r in (("L", letter), ("N", number), ("O", other))}
        self.split_bmp = re.compile(f"{head}|{bmp['L']}+|{bmp['N']}|{bmp['O']}+").findall
        guard = r"(?=[^\x00-\uffff])"
        self.split_any = re.compile(
            f"{head}"
            f"|(?:{bmp['L']}+|{guard}{astral['L']}+)+"
            f"|{bmp['N']}|{guard}{astral['N']}"
            f"|(?:{bmp['O']}+|{guard}{astral['O']}+)+"
        ).findall
        self.has_astral = re.compile(r"[^\x00-\uffff]").search
        self.space_runs = re.compile(_char_class(classes["space"]) + "+").sub


@cache
def _patterns(path: Path = TABLES_PATH) -> _Patterns:
    try:
        tables = json.loads(path.read_text(encoding="utf-8"))
        return _Patterns(tables)
    except (OSError, ValueError, KeyError, TypeError, re.error) as e:
        raise DataError(
            f"cannot read the tokenizer's Unicode tables {path}: {type(e).__name__}: {e}",
            fix="reinstall clipcore, or regenerate them: python clipcore/data/make_unicode_tables.py",
        ) from e


def unicode_version() -> str:
    """The Unicode version of the shipped character classes (that of the `regex` they were taken from)."""
    return _patterns().unicode_version


# ---------------------------------------------------------------------------------------------------------
# Vocabulary

def _byte_chars() -> tuple[list[str], list[int]]:
    """The reference's byte -> character map, and the byte order of the first 256 vocabulary ids.

    Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, NBSP, soft hyphen) are
    moved to U+0100 onwards in byte order, so that no token character is whitespace or a control.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    rest = sorted(set(range(256)).difference(printable))
    chars = [""] * 256
    for b in printable:
        chars[b] = chr(b)
    for n, b in enumerate(rest):
        chars[b] = chr(256 + n)
    return chars, printable + rest


def _read_merges(path: Path) -> list[tuple[str, str]]:
    try:
        with gzip.open(path) as f:
            lines = f.read().decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the BPE vocabulary {path}: {type(e).__name__}: {e}",
                        fix="reinstall clipcore, or pass the path of bpe_simple_vocab_16e6.txt.gz") from e
    merges = [tuple(line.split()) for line in lines[1:1 + N_MERGES]]  # line 0 is a version header
    bad = next((i for i, m in enumerate(merges) if len(m) != 2), None)
    if len(merges) != N_MERGES or bad is not None:
        where = f"line {bad + 2} is not a pair of symbols" if bad is not None else f"{len(merges)} merges"
        raise DataError(f"the BPE vocabulary {path} is malformed: {where} (need {N_MERGES} merge lines)",
                        fix="use OpenAI's bpe_simple_vocab_16e6.txt.gz")
    return merges  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------------
# The tokenizer

def _excerpt(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _text_list(texts: str | Iterable[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)):
        raise TextError(f"texts is {type(texts).__name__}, not str", fix="decode it first, e.g. b.decode('utf-8')")
    try:
        return list(texts)
    except TypeError:
        raise TextError(f"texts must be a str or a list of str, got {type(texts).__name__}",
                        fix="pass a string or a list of strings") from None


def _context_length(value: int) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        n = 0
    if isinstance(value, bool) or n < 1:
        raise TextError(f"context_length must be a positive integer, got {value!r}",
                        fix=f"use the model's context length ({CONTEXT_LENGTH} for CLIP models)")
    return n


class Tokenizer:
    """CLIP's BPE tokenizer. `encode`/`decode` like the reference's SimpleTokenizer; `tokenize`/`__call__`
    give the `clip.tokenize` tensor, `encode_batch` the same as a numpy int64 array.

    use_ftfy: None (default) cleans with ftfy when it is installed, True requires it, False never uses it.
    cache_size: how many distinct tokens to remember (the cache is emptied when it fills up; 0: no cache).
    """

    def __init__(self, vocab_path: str | Path | None = None, *, use_ftfy: bool | None = None,
                 cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._patterns = _patterns()
        chars, id_order = _byte_chars()
        merges = _read_merges(Path(vocab_path) if vocab_path is not None else VOCAB_PATH)
        base = [chars[b] for b in id_order]
        vocab = base + [c + "</w>" for c in base] + [a + b for a, b in merges] + list(SPECIAL_TOKENS)
        self._encoder = {piece: i for i, piece in enumerate(vocab)}
        byte_of = {c: b for b, c in enumerate(chars)}
        self._decoder = {i: bytes(byte_of[c] for c in piece) for piece, i in self._encoder.items()}
        self._ranks = {pair: i for i, pair in enumerate(merges)}
        self._byte_table = {b: c for b, c in enumerate(chars)}  # for str.translate on latin-1 decoded bytes
        self._special = {SOT_TOKEN: (SOT_ID,), EOT_TOKEN: (EOT_ID,)}
        self._cache: dict[str, tuple[int, ...]] = {}
        self._cache_size = cache_size
        self._use_ftfy = use_ftfy
        self._fix_text: Callable[[str], str] | None = None
        self._fix_resolved = False
        if use_ftfy:
            self._resolve_ftfy()

    vocab_size = VOCAB_SIZE
    sot_id = SOT_ID
    eot_id = EOT_ID

    # ---- cleaning ---------------------------------------------------------------------------------------

    def _resolve_ftfy(self) -> Callable[[str], str] | None:
        if not self._fix_resolved:
            if self._use_ftfy is not False:
                try:
                    import ftfy  # optional; imported on the first text that needs it
                    self._fix_text = ftfy.fix_text
                except ImportError:
                    if self._use_ftfy:
                        raise TextError("use_ftfy=True but ftfy is not installed",
                                        fix="pip install 'clipcore[ftfy]'") from None
            self._fix_resolved = True
        return self._fix_text

    @property
    def uses_ftfy(self) -> bool:
        """Whether texts are cleaned with ftfy (resolves the optional import now)."""
        return self._resolve_ftfy() is not None

    def clean(self, text: str) -> str:
        """The text as the reference sees it before splitting it into tokens."""
        if not isinstance(text, str):
            raise TextError(f"cannot clean a {type(text).__name__}, only a str", fix="pass a string")
        return self._clean(text)

    def _clean(self, text: str) -> str:
        if text.isascii() and text.isprintable() and "&" not in text:
            # ftfy and html.unescape leave printable ASCII without '&' unchanged, and its only whitespace
            # is ' ': the whole cleaning reduces to this (checked in conformance/test_tokenizer.py).
            return " ".join(text.split()).lower()
        fix_text = self._resolve_ftfy()
        if fix_text is not None:
            text = fix_text(text)
        text = html.unescape(html.unescape(text)).strip()
        return self._patterns.space_runs(" ", text).strip().lower()

    # ---- BPE --------------------------------------------------------------------------------------------

    def _merge(self, word: list[str]) -> list[str]:
        """Merge the lowest-ranked adjacent pair everywhere (left to right), until no pair has a rank."""
        rank_of = self._ranks.get
        unranked = len(self._ranks)
        while len(word) > 1:
            best, best_rank = None, unranked
            for pair in pairwise(word):
                rank = rank_of(pair, unranked)
                if rank < best_rank:
                    best, best_rank = pair, rank
            if best is None:
                break
            first, second = best
            merged, out, i, n = first + second, [], 0, len(word)
            while i < n:
                if word[i] == first and i + 1 < n and word[i + 1] == second:
                    out.append(merged)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        return word

    def _token_ids(self, token: str) -> tuple[int, ...]:
        ids = self._special.get(token)
        if ids is None:
            # A lone surrogate has no UTF-8 bytes: UnicodeEncodeError, turned into TextError by the caller.
            symbols = list(token.encode("utf-8").decode("latin-1").translate(self._byte_table))
            symbols[-1] += "</w>"
            encoder = self._encoder
            ids = tuple(encoder[piece] for piece in self._merge(symbols))
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[token] = ids
        return ids

    def _encode(self, text: str, where: str) -> list[int]:
        if not isinstance(text, str):
            raise TextError(f"{where} is a {type(text).__name__}, not a str", fix="pass strings only")
        cleaned = self._clean(text)
        patterns = self._patterns
        split = patterns.split_any if patterns.has_astral(cleaned) else patterns.split_bmp
        cache = self._cache
        ids: list[int] = []
        try:
            for token in split(cleaned):
                token_ids = cache.get(token)
                ids.extend(token_ids if token_ids is not None else self._token_ids(token))
        except UnicodeEncodeError as e:
            bad = e.object[e.start]
            raise TextError(
                f"{where} ({_excerpt(text)}) contains the lone surrogate U+{ord(bad):04X}, which has no UTF-8 "
                "bytes",
                fix="install ftfy (pip install 'clipcore[ftfy]'), which replaces it with U+FFFD as the "
                "reference does, or remove it",
            ) from None
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without the start and end tokens (like the reference's `encode`)."""
        return self._encode(text, "the text")

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a sequence of ids, as the reference decodes it: '</w>' becomes a space, bad UTF-8 U+FFFD.

        Padding is not stripped (id 0 is '!'), special tokens appear literally, as in the reference.
        """
        if hasattr(ids, "tolist"):  # numpy arrays and torch tensors
            ids = ids.tolist()
        decoder = self._decoder
        try:
            raw = b"".join([decoder[i] for i in ids])
        except (KeyError, TypeError) as e:
            raise TextError(f"cannot decode {_excerpt(repr(ids), 60)}: {e!r} is not a token id in 0..{VOCAB_SIZE - 1}",
                            fix="pass a flat sequence of integer ids (one row of a tokenize result)") from None
        return raw.decode("utf-8", errors="replace").replace("</w>", " ")

    # ---- batches ----------------------------------------------------------------------------------------

    def encode_batch(self, texts: str | Iterable[str], context_length: int = CONTEXT_LENGTH,
                     truncate: bool = False) -> np.ndarray:
        """An int64 array (len(texts), context_length): start, ids, end, then zeros, per text.

        A text needing more than context_length tokens raises TextError, or with truncate=True keeps
        its first context_length tokens and makes the last one the end token.
        """
        texts = _text_list(texts)
        ctx = _context_length(context_length)
        rows = []
        for i, text in enumerate(texts):
            row = [SOT_ID, *self._encode(text, f"text {i}"), EOT_ID]
            if len(row) > ctx:
                if not truncate:
                    raise TextError(
                        f"text {i} ({_excerpt(text)}) has {len(row)} tokens with the start and end tokens, "
                        f"more than the context length {ctx}",
                        fix=f"pass truncate=True to keep its first {ctx} tokens (the last one becomes the end "
                        "token), or shorten the text",
                    )
                row = row[:ctx]
                row[-1] = EOT_ID
            rows.append(row)
        out = np.zeros((len(rows), ctx), dtype=np.int64)
        lengths = np.fromiter(map(len, rows), dtype=np.intp, count=len(rows))
        # Row-major boolean indexing fills the rows' prefixes in order: one vectorised copy for the batch.
        out[np.arange(ctx) < lengths[:, None]] = np.fromiter(chain.from_iterable(rows), dtype=np.int64,
                                                              count=int(lengths.sum()))
        return out

    def tokenize(self, texts: str | Iterable[str], context_length: int = CONTEXT_LENGTH,
                 truncate: bool = False) -> torch.Tensor:
        """The `clip.tokenize` tensor: int64 (len(texts), context_length); see `encode_batch`."""
        import torch  # only this entry point needs torch

        return torch.from_numpy(self.encode_batch(texts, context_length, truncate))

    __call__ = tokenize


_default: Tokenizer | None = None
_default_lock = threading.Lock()


def default_tokenizer() -> Tokenizer:
    """The shared Tokenizer, built on first use (reading the vocabulary takes a fraction of a second)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Tokenizer()
    return _default


def tokenize(texts: str | Iterable[str], context_length: int = CONTEXT_LENGTH,
             truncate: bool = False) -> torch.Tensor:
    """Same as OpenAI's `clip.tokenize`: an int64 tensor (len(texts), context_length) of BPE ids.

    Too long without truncate: TextError naming the text, its token count and the context length.
    """
    return default_tokenizer().tokenize(texts, context_length, truncate)
