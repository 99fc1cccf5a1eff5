"""clipcore.tokenizer against the reference tokenizers: OpenAI's `clip.tokenize` and open_clip's SimpleTokenizer.

Differential properties over arbitrary Unicode (and targeted strategies for the characters where tokenizers
usually go wrong), exhaustive checks of the shipped Unicode tables against the installed `regex`, the
proof behind the ASCII fast path, and the API's edges (errors, truncation, context lengths).
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import ftfy
import numpy as np
import open_clip
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import clipcore.tokenizer as ct
from clipcore.errors import DataError, TextError
from conformance.reference import import_openai_clip

clip = import_openai_clip()
from clip import simple_tokenizer as openai_simple_tokenizer  # noqa: E402

OPENAI = clip.clip._tokenizer  # the instance behind clip.tokenize
OPENCLIP = open_clip.tokenizer._tokenizer  # the instance behind open_clip.tokenize
TOK = ct.default_tokenizer()
NO_FTFY = ct.Tokenizer(use_ftfy=False)  # the path taken where ftfy is not installed
TABLES = json.loads(ct.TABLES_PATH.read_text(encoding="utf-8"))
# The differential properties are cheap: search deeper than the profile's default (ci: 40), never shallower.
MORE = settings(max_examples=max(settings.default.max_examples, 200))


def table_code_points(name: str) -> list[int]:
    return [cp for a, b in ct._parse_ranges(TABLES["classes"][name]) for cp in range(a, b + 1)]


# ---------------------------------------------------------------------------------------------------------
# Strategies

def chars_from(code_points: list[int]) -> st.SearchStrategy[str]:
    return st.sampled_from(code_points).map(chr)


def chars_in(*ranges: tuple[int, int]) -> st.SearchStrategy[str]:
    return st.one_of([st.integers(a, b) for a, b in ranges]).map(chr)


WHITESPACE = [chr(c) for c in (*range(0x09, 0x0E), *range(0x1C, 0x21), 0x85, 0xA0, 0x1680, 0x180E,
                               *range(0x2000, 0x200C), 0x2028, 0x2029, 0x202F, 0x205F, 0x2060, 0x3000, 0xFEFF)]
ENTITIES = ["&amp;", "&amp;amp;", "&amp;amp;amp;", "&#x41;", "&#65;", "&lt;", "&gt;", "&quot;", "&nbsp;",
            "&eacute;", "&#x1F600;", "&#0;", "&#xD800;", "&#x110000;", "&AMP;", "&", "&#", "&;", "&not",
            "&notit;", "&ampx", "&amp;lt;|endoftext|&amp;gt;", "&lt;|startoftext|&gt;", "&#39;s", "&rsquo;t"]
# Where tokenizers part ways: special-token strings of both references and their case-folded look-alikes,
# contractions in every case, U+0345 (which the reference's pattern skips), case-fold oddities.
TRICKY = ["<|startoftext|>", "<|endoftext|>", "<|ſtartoftext|>", "<|ENDOFTEXT|>", "<start_of_text>",
          "<end_of_text>", "'s", "'S", "'ſ", "'t", "'re", "'ve", "'m", "'ll", "'LL", "'d", "’s", "‘", "\u0345",
          "\u212a", "\u212b", "İ", "ı", "ß", "ẞ", "ﬆ", "ﬁ", "Σ", "ς", "ǅ", "ͅ", "</w>", "cafÃ©", "â€™", "Ã¼ber",
          "\x1b[31m", "\r\n", "\r", "\x00", "\x7f", "\x9d", "ＡＢＣ１２", "e\u0301", "\ufffd", "a\u0300\u0301"]
WORDS = ["a", "photo", "of", "the", "cat", "dog", "man", "woman", "riding", "surfboard", "wave", "with", "two",
         "2", "3", "on", "top", "street", "pizza", "table", ",", ".", "!", "?", ";", ":", "-", "(", ")", '"', "'",
         "A", "The", "DOG", "Café", "naïve", "Zürich"]

EMOJI = st.one_of(chars_in((0x1F000, 0x1FAFF), (0x2600, 0x27BF), (0x1F1E6, 0x1F1FF), (0x1F3FB, 0x1F3FF),
                           (0xE0020, 0xE007F)), st.sampled_from(["\u200d", "\ufe0f"]))
EMOJI_SEQUENCES = ["👨\u200d👩\u200d👧", "🏴\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f", "👍🏽", "🇫🇷"]
CJK = chars_in((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x20000, 0x2A6DF),
               (0xF900, 0xFAFF), (0xFF00, 0xFFEF))
COMBINING = st.one_of(st.characters(categories=["Mn", "Mc", "Me"]), chars_in((0x300, 0x36F)))
# Letters and digits as the reference's `regex` sees them: its Unicode is newer than Python's unicodedata.
LETTERS = chars_from(table_code_points("letter"))
NUMBERS = chars_from(table_code_points("number"))
ANY_CHAR = st.characters()  # every code point except surrogates, unassigned included
SURROGATE = st.characters(categories=["Cs"])

CHUNK = st.one_of(
    st.text(max_size=8),
    st.sampled_from(WORDS),
    st.sampled_from(WHITESPACE),
    st.sampled_from(ENTITIES),
    st.sampled_from(TRICKY),
    st.text(EMOJI, max_size=4),
    st.sampled_from(EMOJI_SEQUENCES),
    st.text(CJK, max_size=6),
    st.text(COMBINING, max_size=3),
    st.text(LETTERS, max_size=6),
    st.text(NUMBERS, max_size=4),
)
TEXTS = st.one_of(
    st.text(),
    st.lists(CHUNK, max_size=24).map("".join),
    st.lists(st.sampled_from(WORDS), max_size=90).map(" ".join),  # caption-like, sometimes too long
    st.text(min_size=200, max_size=2000),  # very long
)


# ---------------------------------------------------------------------------------------------------------
# Helpers

def reference_rows(texts: list[str], context_length: int, truncate: bool) -> torch.Tensor | None:
    """OpenAI's tokenize, or None where it refuses (too long without truncate)."""
    try:
        return clip.tokenize(texts, context_length=context_length, truncate=truncate)
    except RuntimeError as e:
        assert "too long" in str(e)
        return None


def assert_same_as_openai(texts: list[str], context_length: int = 77) -> None:
    for truncate in (False, True):
        expected = reference_rows(texts, context_length, truncate)
        if expected is None:
            with pytest.raises(TextError, match="more than the context length"):
                ct.tokenize(texts, context_length=context_length, truncate=truncate)
        else:
            got = ct.tokenize(texts, context_length=context_length, truncate=truncate)
            assert got.dtype == expected.dtype == torch.int64
            assert torch.equal(got, expected)


# ---------------------------------------------------------------------------------------------------------
# Differential properties

@MORE
@given(st.lists(TEXTS, min_size=1, max_size=4))
def test_tokenize_equals_openai(texts):
    assert_same_as_openai(texts)


@given(st.lists(CHUNK, max_size=40).map("".join), st.sampled_from([1, 2, 3, 5, 16, 32, 64, 76, 77, 78, 200]))
def test_other_context_lengths_equal_openai(text, context_length):
    assert_same_as_openai([text], context_length)


@MORE
@given(TEXTS)
def test_encode_decode_equal_openai(text):
    ids = TOK.encode(text)
    assert ids == OPENAI.encode(text)
    assert TOK.decode(ids) == OPENAI.decode(ids)


@MORE
@given(st.lists(st.integers(0, ct.VOCAB_SIZE - 1), max_size=40))
def test_decode_of_any_ids_equals_openai(ids):
    # arbitrary id sequences split UTF-8 characters: both must replace the broken bytes the same way
    assert TOK.decode(ids) == OPENAI.decode(ids)
    assert TOK.decode(np.array(ids, dtype=np.int64)) == OPENAI.decode(ids)
    assert TOK.decode(torch.tensor(ids, dtype=torch.long)) == OPENAI.decode(ids)


@MORE
@given(TEXTS)
def test_equals_open_clip_where_the_references_agree(text):
    """open_clip's tokenizer differs from OpenAI's only in its special-token strings and in truncating
    silently; on text whose cleaned form has no '<' (so no special token of either kind), ours equals it."""
    if "<" in TOK.clean(text):
        return
    got = ct.tokenize([text], truncate=True)
    assert torch.equal(got, open_clip.tokenize([text]))
    assert TOK.encode(text) == OPENCLIP.encode(text)


@MORE
@given(st.one_of(TEXTS, st.lists(st.one_of(CHUNK, st.text(SURROGATE, min_size=1, max_size=3))).map("".join)))
def test_without_ftfy_equals_openai_without_ftfy(text):
    """The path taken when ftfy is not installed equals the reference with `fix_text` made the identity;
    where that reference crashes (lone surrogates have no UTF-8), ours raises TextError instead."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(openai_simple_tokenizer, "ftfy", SimpleNamespace(fix_text=lambda s: s))
        try:
            expected = OPENAI.encode(text)
        except UnicodeEncodeError:
            with pytest.raises(TextError, match="lone surrogate"):
                NO_FTFY.encode(text)
            return
    assert NO_FTFY.encode(text) == expected


# The inputs the module docstring lists as cleaned differently when ftfy is not installed.
WITHOUT_FTFY_DIFFERS = ["cafÃ©", "a\x85b", "don’t", "ﬁsh", "ＡＢＣ", "cafe\u0301", "a\x00b", "a\x1cb", "x\x7f",
                        "\ufeffbom", "\x1b[31mred\x1b[0m", "&amp;amp;amp;"]


@pytest.mark.parametrize("text", WITHOUT_FTFY_DIFFERS)
def test_documented_differences_without_ftfy(text):
    assert TOK.encode(text) == OPENAI.encode(text)
    assert NO_FTFY.encode(text) != OPENAI.encode(text)
    for same in ("a\rb", "a\u2028b", "&amp;amp;", "<b>&amp;amp;amp;</b>", "plain ASCII, 2 dogs!"):
        assert NO_FTFY.encode(same) == OPENAI.encode(same)


@given(st.text(SURROGATE, min_size=1, max_size=3), st.text(max_size=5))
def test_lone_surrogates_equal_openai_with_ftfy(surrogates, text):
    # ftfy replaces them (and joins valid pairs), so the reference does not fail and neither do we
    assert_same_as_openai([text + surrogates + text, surrogates])


# ---------------------------------------------------------------------------------------------------------
# The ASCII fast path: printable ASCII without '&' skips ftfy and html.unescape

FAST_PATH_ALPHABET = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "&")


@MORE
@given(st.text(FAST_PATH_ALPHABET))
def test_fast_path_cleaning_is_the_identity_of_the_skipped_steps(text):
    assert ftfy.fix_text(text) == text
    assert html.unescape(html.unescape(text)) == text
    expected = openai_simple_tokenizer.whitespace_clean(openai_simple_tokenizer.basic_clean(text)).lower()
    assert TOK.clean(text) == expected


def test_fast_path_domain_is_exactly_printable_ascii_without_ampersand():
    inside = [chr(c) for c in range(128) if chr(c).isprintable() and chr(c) != "&"]
    assert "".join(inside) == FAST_PATH_ALPHABET
    # every single character, and every pair, of the domain: ftfy leaves them alone
    assert all(ftfy.fix_text(a + b) == a + b for a in inside for b in inside)


# ---------------------------------------------------------------------------------------------------------
# The shipped Unicode tables against the installed `regex`, over every code point

EVERY_CODE_POINT = "".join(map(chr, range(0x110000)))
BMP = EVERY_CODE_POINT[:0x10000]


@pytest.fixture(scope="module")
def regex_module():
    return pytest.importorskip("regex", reason="the `regex` module (test extra) is needed to re-derive the tables")


def test_reference_pattern_is_the_one_the_tables_describe(regex_module):
    literals = "|".join(regex_module.escape(t, special_only=True) for t in ct.LITERAL_TOKENS)
    assert OPENAI.pat.pattern == literals + r"|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
    assert OPENAI.pat.flags & regex_module.IGNORECASE
    assert openai_simple_tokenizer.whitespace_clean("a\x1c \u3000b") == "a\x1c b"  # still regex's \s


@pytest.mark.parametrize(("name", "pattern", "ignorecase"), [
    ("letter", r"[\p{L}]", True), ("number", r"[\p{N}]", True), ("other", r"[^\s\p{L}\p{N}]", True),
    ("space", r"\s", False),
])
def test_tables_equal_installed_regex_classes(regex_module, name, pattern, ignorecase):
    flags = regex_module.IGNORECASE if ignorecase else 0
    expected = [m.start() for m in regex_module.finditer(pattern, EVERY_CODE_POINT, flags)]
    assert table_code_points(name) == expected, (
        f"clipcore/data/unicode_tables.json ({TABLES['regex_version']}, Unicode {TABLES['unicode_version']}) "
        f"differs from regex {regex_module.__version__}: rerun clipcore/data/make_unicode_tables.py")


def test_case_variants_equal_installed_regex(regex_module):
    for char, ranges in TABLES["case_variants"].items():
        expected = [m.start() for m in regex_module.finditer(regex_module.escape(char), EVERY_CODE_POINT,
                                                              regex_module.IGNORECASE)]
        assert [cp for a, b in ct._parse_ranges(ranges) for cp in range(a, b + 1)] == expected, char


def test_compiled_patterns_split_every_code_point_like_the_reference():
    patterns = ct._patterns()
    # every code point in one text, and every code point after an apostrophe (the contractions)
    for text in (EVERY_CODE_POINT, "'".join(EVERY_CODE_POINT)):
        assert patterns.split_any(text) == OPENAI.pat.findall(text)
    for text in (BMP, "'".join(BMP), "<|" + "<|".join(BMP)):
        assert patterns.split_bmp(text) == OPENAI.pat.findall(text)
    expected = openai_simple_tokenizer.whitespace_clean(EVERY_CODE_POINT)
    assert patterns.space_runs(" ", EVERY_CODE_POINT).strip() == expected


def test_special_tokens_and_their_case_folded_forms():
    for text in ("<|startoftext|>", "<|endoftext|>", "<|ſtartoftext|>", "<|ENDOFTEXT|>", "x<|endoftext|>y",
                 "it'ſ", "IT'S", "a\u0345b", "!\u0345?", "<end_of_text>"):
        assert TOK.encode(text) == OPENAI.encode(text), text
    assert TOK.encode("<|endoftext|>") == [ct.EOT_ID]
    assert TOK.encode("<|ſtartoftext|>") != [ct.SOT_ID]  # one token, but not the special one
    assert TOK.encode("a\u0345b") == TOK.encode("a b")  # U+0345 is in no class: skipped, and it splits the run


def test_every_vocabulary_entry_encodes_like_openai():
    words = [OPENAI.decode([i]) for i in range(ct.VOCAB_SIZE)]
    assert TOK.encode(" ".join(words)) == OPENAI.encode(" ".join(words))


def test_caption_like_corpus_equals_both_references():
    rng = random.Random(4)
    nouns = ["man", "woman", "dog", "cat", "bus", "pizza", "kitchen", "street", "surfboard", "giraffe", "bench"]
    captions = [f"A {rng.choice(nouns)} {rng.choice(['on', 'next to', 'with'])} the {rng.choice(nouns)}"
                f"{rng.choice(['.', '', ' !', ', 2 of them.'])}" for _ in range(300)]
    assert torch.equal(ct.tokenize(captions), clip.tokenize(captions))
    assert torch.equal(ct.tokenize(captions), open_clip.tokenize(captions))


# ---------------------------------------------------------------------------------------------------------
# API edges

def test_shapes_single_string_list_tuple_generator_and_empty():
    assert ct.tokenize("a dog").shape == (1, 77)
    assert torch.equal(ct.tokenize("a dog"), clip.tokenize("a dog"))
    assert torch.equal(ct.tokenize(("a", "b c")), clip.tokenize(["a", "b c"]))
    assert torch.equal(ct.tokenize(t for t in ["a", "b"]), clip.tokenize(["a", "b"]))
    empty = ct.tokenize([])
    assert empty.shape == (0, 77) and empty.dtype == torch.int64
    assert ct.tokenize("")[0, :3].tolist() == [ct.SOT_ID, ct.EOT_ID, 0]
    assert torch.equal(ct.tokenize(["", "   ", "\t\n"]), clip.tokenize(["", "   ", "\t\n"]))


def test_encode_batch_is_the_same_rows_as_numpy_int64():
    texts = ["a photo of a cat", "Hello World!", "東京 🐶"]
    out = TOK.encode_batch(texts, context_length=12)
    assert isinstance(out, np.ndarray) and out.dtype == np.int64 and out.shape == (3, 12)
    assert np.array_equal(out, clip.tokenize(texts, context_length=12).numpy())
    assert torch.equal(TOK(texts), TOK.tokenize(texts))


def test_too_long_raises_text_error_naming_text_count_and_context_length():
    fits, too_long = "a " * 75, "dog " * 76
    assert ct.tokenize(fits)[0, -1].item() == ct.EOT_ID  # 75 content tokens fill 77 exactly
    with pytest.raises(TextError) as info:
        ct.tokenize(["short", too_long])
    message = str(info.value)
    assert "text 1" in message and "'dog dog" in message and "78 tokens" in message and "77" in message
    assert "truncate=True" in info.value.fix
    assert isinstance(info.value, ValueError)
    with pytest.raises(RuntimeError):
        clip.tokenize(["short", too_long])  # the reference refuses the same text


def test_truncation_keeps_the_first_tokens_and_ends_with_the_end_token():
    text = " ".join(f"word{i}" for i in range(100))
    full = [ct.SOT_ID, *TOK.encode(text), ct.EOT_ID]
    for context_length in (1, 2, 3, 10, 77):
        row = ct.tokenize(text, context_length=context_length, truncate=True)[0].tolist()
        assert row == [*full[:context_length - 1], ct.EOT_ID]
        assert row == clip.tokenize(text, context_length=context_length, truncate=True)[0].tolist()
    # open_clip truncates the same way, but silently (it never raises)
    assert torch.equal(open_clip.tokenize([text]), ct.tokenize([text], truncate=True))


@pytest.mark.parametrize("texts", [None, 5, b"bytes", ["ok", None], ["ok", b"x"], [["nested"]]])
def test_bad_texts_raise_text_error(texts):
    with pytest.raises(TextError):
        ct.tokenize(texts)


@pytest.mark.parametrize("context_length", [0, -1, 1.5, True, "77", None])
def test_bad_context_length_raises_text_error(context_length):
    with pytest.raises(TextError, match="context_length"):
        ct.tokenize("a", context_length=context_length)


@pytest.mark.parametrize("ids", [[ct.VOCAB_SIZE], [-1], ["a"], [[1, 2]], [1.5]])
def test_decode_of_bad_ids_raises_text_error(ids):
    with pytest.raises(TextError, match="token id"):
        TOK.decode(ids)


def test_bounded_cache_gives_the_same_ids():
    small = ct.Tokenizer(cache_size=8)
    text = " ".join(f"w{i}x" for i in range(200))
    assert small.encode(text) == OPENAI.encode(text)
    assert len(small._cache) <= 8
    assert ct.Tokenizer(cache_size=0).encode(text) == OPENAI.encode(text)


# ---------------------------------------------------------------------------------------------------------
# Package data and imports

def test_vocabulary_is_the_reference_file_and_ships_with_its_licence():
    reference = Path(openai_simple_tokenizer.default_bpe())
    digest = hashlib.sha256(ct.VOCAB_PATH.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(reference.read_bytes()).hexdigest()
    notice = (ct.DATA_DIR / "LICENSE-bpe_simple_vocab_16e6.txt").read_text(encoding="utf-8")
    assert "MIT" in notice and "Copyright (c) 2021 OpenAI" in notice
    assert TABLES["unicode_version"] == ct.unicode_version() != "unknown"


def test_malformed_vocabulary_raises_data_error(tmp_path):
    not_gzip = tmp_path / "plain.txt.gz"
    not_gzip.write_text("version\na b\n")
    with pytest.raises(DataError, match=r"plain\.txt\.gz"):
        ct.Tokenizer(not_gzip)
    short = tmp_path / "short.txt.gz"
    short.write_bytes(gzip.compress(b"version\na b\nc d e\n"))
    with pytest.raises(DataError, match="malformed"):
        ct.Tokenizer(short)
    with pytest.raises(DataError):
        ct.Tokenizer(tmp_path / "missing.txt.gz")


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_is_cheap_and_ftfy_is_imported_only_when_a_text_needs_it():
    out = run_python(
        "import sys, clipcore.tokenizer as t\n"
        "print('ftfy' in sys.modules, 'regex' in sys.modules, t._default is None)\n"
        "t.default_tokenizer().encode('A plain ASCII caption, 2 dogs.')\n"
        "print('ftfy' in sys.modules)\n"
        "t.default_tokenizer().encode('café')\n"
        "print('ftfy' in sys.modules, 'regex' in sys.modules)\n"
    )
    assert out.split() == ["False", "False", "True", "False", "True", "False"]


def test_works_without_ftfy_installed():
    texts = ["Hello World!", "caf\u00e9 \u0000x", "don\u2019t \ufb01 \uff21"]
    out = run_python(
        "import json, sys; sys.modules['ftfy'] = None  # import ftfy now fails\n"
        "import clipcore.tokenizer as t\n"
        "tok = t.Tokenizer()\n"
        f"print(json.dumps([tok.uses_ftfy, [tok.encode(x) for x in {texts!r}]]))\n"
        "try:\n"
        "    t.Tokenizer(use_ftfy=True)\n"
        "except t.TextError as e:\n"
        "    print('refused:', e.fix)\n"
    )
    result, refusal = out.splitlines()
    assert json.loads(result) == [False, [NO_FTFY.encode(x) for x in texts]]
    assert NO_FTFY.encode(texts[2]) != TOK.encode(texts[2])  # what ftfy changes (documented)
    assert refusal == "refused: pip install 'clipcore[ftfy]'"
