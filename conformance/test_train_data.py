"""Captions files and image folders -> batches: formats, sharding across ranks, replay from any batch, and
errors that name the file and the line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from clipcore.errors import DataError
from clipcore.preprocess import Preprocess
from clipcore.tokenizer import tokenize
from clipcore.train import CaptionBatches, LabelledBatches, read_captions, read_image_folder

SIZE = 16


def write_images(folder, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


@pytest.fixture()
def folder(tmp_path):
    write_images(tmp_path, 12)
    return tmp_path


def test_csv_tsv_and_jsonl(folder):
    (folder / "a.csv").write_text("filepath,title\nimg00.png,a dog\n" + '"img01.png","a cat, sitting"\n')
    (folder / "b.tsv").write_text("image\tcaption\nimg00.png\ta dog\nimg01.png\ta cat, sitting\n")
    (folder / "c.csv").write_text("image\tcaption\nimg00.png\ta dog\nimg01.png\ta cat, sitting\n")  # tabs
    lines = [{"file": "img00.png", "text": "a dog"}, {"file": "img01.png", "text": "a cat, sitting"}]
    (folder / "d.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    for name in ("a.csv", "b.tsv", "c.csv", "d.jsonl"):
        examples = read_captions(folder / name)
        assert [(e.image, e.caption) for e in examples] == [
            (folder / "img00.png", "a dog"),
            (folder / "img01.png", "a cat, sitting"),
        ], name
    sub = folder / "meta"
    sub.mkdir()
    (sub / "e.csv").write_text("path,text\nimg02.png,x\n")
    assert read_captions(sub / "e.csv", root=folder)[0].image == folder / "img02.png"
    (sub / "f.csv").write_text("pic,words\nimg02.png,x\n")
    assert read_captions(sub / "f.csv", root=folder, image_key="pic", caption_key="words")[0].caption == "x"


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("a.csv", "filepath,caption\nimg00.png,ok\nimg01.png,\n", r"line 3 of .*a\.csv: 'caption' is empty"),
        ("a.csv", "filepath,caption\nimg00.png,ok\nimg01.png\n", r"line 3 of .*a\.csv: 'caption' is missing"),
        (
            "a.csv",
            "filepath,caption\nimg00.png,ok\nnope.png,x\n",
            r"line 3 of .*a\.csv: image 'nope\.png' does not",
        ),
        ("a.csv", "file_name,caption\nimg00.png,ok\n", r"a\.csv has no image column.*'file_name'"),
        ("a.csv", "", r"a\.csv is empty"),
        ("a.csv", "filepath,caption\n", r"a\.csv has no examples"),
        (
            "a.jsonl",
            '{"filepath": "img00.png", "caption": "a"}\n{"filepath": "img01.png"',
            r"line 2 of .*not valid JSON",
        ),
        (
            "a.jsonl",
            '{"filepath": "img00.png", "caption": "a"}\n[1, 2]\n',
            r"line 2 of .*a JSON list, not an object",
        ),
        ("a.jsonl", '{"filepath": "img00.png", "caption": 7}\n', r"line 1 of .*'caption' is not text"),
        (
            "a.jsonl",
            '{"filepath": "img00.png", "caption": "a"}\n{"caption": "b"}\n',
            r"line 2 of .*'filepath' is missing",
        ),
        ("a.parquet", "x", r"unknown captions file type '\.parquet'"),
    ],
)
def test_errors_name_the_file_and_line(folder, name, content, message):
    (folder / name).write_text(content)
    with pytest.raises(DataError, match=message):
        read_captions(folder / name)


def test_missing_and_undecodable_files(folder):
    with pytest.raises(DataError, match=r"captions file .*missing\.csv does not exist"):
        read_captions(folder / "missing.csv")
    (folder / "latin1.csv").write_bytes("filepath,caption\nimg00.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_captions(folder / "latin1.csv")


def preprocess() -> Preprocess:
    return Preprocess(SIZE)


def caption_file(folder, n: int = 12):
    rows = "".join(f"img{i:02d}.png,caption number {i}\n" for i in range(n))
    (folder / "captions.csv").write_text("filepath,caption\n" + rows)
    return read_captions(folder / "captions.csv")


def test_batches_are_preprocessed_and_tokenized(folder):
    examples = caption_file(folder)
    data = CaptionBatches(examples, preprocess(), None, 4, context_length=10, shuffle=False, workers=2)
    assert len(data) == 3
    images, tokens = next(iter(data.batches(0)))
    assert images.shape == (4, 3, SIZE, SIZE) and tokens.shape == (4, 10)
    assert torch.equal(images[1], preprocess()(folder / "img01.png"))
    assert torch.equal(tokens, tokenize([f"caption number {i}" for i in range(4)], 10, truncate=True))


def test_order_is_seeded_and_ranks_split_the_global_batch(folder):
    examples = caption_file(folder)

    def captions(data, epoch):
        return [[e.caption for e in data.batch_examples(epoch, i)] for i in range(len(data))]

    whole = CaptionBatches(examples, preprocess(), None, 6, seed=1)
    ranks = [CaptionBatches(examples, preprocess(), None, 3, seed=1, rank=r, world_size=2) for r in range(2)]
    assert len(whole) == len(ranks[0]) == 2
    for epoch in (0, 1):
        per_rank = [captions(r, epoch) for r in ranks]
        assert [a + b for a, b in zip(*per_rank, strict=True)] == captions(whole, epoch)
    assert captions(whole, 0) != captions(whole, 1)  # a new order each epoch
    assert captions(whole, 0) == captions(CaptionBatches(examples, preprocess(), None, 6, seed=1), 0)
    assert captions(whole, 0) != captions(CaptionBatches(examples, preprocess(), None, 6, seed=2), 0)
    # entering an epoch at a batch gives that batch: what resuming relies on
    later = list(whole.batches(1, start=1))
    assert len(later) == 1
    assert torch.equal(later[0][0], list(whole.batches(1))[1][0])
    with pytest.raises(DataError, match="do not fill one global batch"):
        CaptionBatches(examples, preprocess(), None, 7, world_size=2)


def test_a_broken_image_is_named_with_its_line(folder):
    examples = caption_file(folder)
    (folder / "img05.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    data = CaptionBatches(examples, preprocess(), None, 4, shuffle=False, workers=2)
    batches = data.batches(0)
    next(batches)  # rows 0-3 are fine
    with pytest.raises(DataError, match=r"line 7 of .*captions\.csv: image .*img05\.png cannot be used"):
        next(batches)


def test_image_folder(tmp_path):
    for name in ("dog", "cat"):
        (tmp_path / name).mkdir()
        write_images(tmp_path / name, 3)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    examples, classes = read_image_folder(tmp_path)
    assert classes == ["cat", "dog"]
    assert [e.label for e in examples] == [0, 0, 0, 1, 1, 1]
    batches = list(LabelledBatches(examples, preprocess(), 4))
    assert [b[0].shape[0] for b in batches] == [4, 2]
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.tensor([0, 0, 0, 1, 1, 1]))
    with pytest.raises(DataError, match="no images in class subfolders"):
        read_image_folder(tmp_path / "cat")
    with pytest.raises(DataError, match="is not a folder"):
        read_image_folder(tmp_path / "nope")
