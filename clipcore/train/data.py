"""Training and evaluation data from plain files: images in a folder, captions in a CSV/TSV/JSONL file.

    examples = read_captions("data/captions.csv")                # image paths relative to the file's folder
    data = CaptionBatches(examples, Preprocess(224), None, batch_size=256)     # None: clipcore.tokenize
    for images, tokens in data.batches(epoch=0): ...

Captions file formats (the columns are found by name; pass image_key/caption_key to choose others):
- CSV (comma) or TSV (tab; also a .csv whose header has tabs and no commas): a header row naming the columns.
- JSONL: one JSON object per line.
Image columns tried: filepath, image, image_path, file, filename, path. Captions: caption, title, text.

Every problem names the file and the line: a missing column, an empty value, a JSON syntax error, an image
that does not exist (checked when the file is read) or cannot be decoded (found when its batch is loaded).

Batches: each epoch visits the examples in a seeded random order (the same for every rank); a global batch
is `batch_size * world_size` consecutive examples of that order and rank r takes the r-th block of
`batch_size`, so N ranks together see exactly the batches one process with N times the batch size would.
The incomplete last global batch is dropped. Images are decoded by `preprocess.batch` in worker threads
while the previous batch trains (one batch of read-ahead).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from clipcore.errors import ClipcoreError, DataError

__all__ = [
    "CAPTION_KEYS",
    "IMAGE_EXTENSIONS",
    "IMAGE_KEYS",
    "CaptionBatches",
    "Example",
    "LabelledBatches",
    "caption_tokenizer",
    "read_captions",
    "read_image_folder",
]

IMAGE_KEYS = ("filepath", "image", "image_path", "file", "filename", "path")
CAPTION_KEYS = ("caption", "title", "text")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class BatchPreprocess(Protocol):
    """What the data needs from clipcore.preprocess.Preprocess: many images (paths) in, one tensor out."""

    def batch(self, images: Sequence[Any], workers: int | None = None) -> torch.Tensor: ...


Tokenizer = Callable[[list[str]], torch.Tensor]


@dataclass(frozen=True)
class Example:
    """One image with its caption (training) or class index (evaluation), and where it was declared."""

    image: Path
    caption: str
    label: int = -1
    where: str = ""  # "line 12 of captions.csv": for error messages


# --- reading captions files ---------------------------------------------------------------------------------


def _pick_key(
    columns: Sequence[str], wanted: str | None, candidates: tuple[str, ...], what: str, file: Path
) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise DataError(
                f"{file} has no {what} column {wanted!r}; its columns are {list(columns)}",
                fix=f"name the {what} column correctly ({what}_key=...)",
            )
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise DataError(
        f"{file} has no {what} column: looked for {list(candidates)}, found {list(columns)}",
        fix=f"rename the column to one of {list(candidates)} or pass {what}_key=...",
    )


def _csv_records(file: Path, text: str, sep: str | None) -> Iterator[tuple[int, dict, list[str]]]:
    first_line = text.split("\n", 1)[0]
    if sep is None:
        tab_header = "\t" in first_line and "," not in first_line
        sep = "\t" if file.suffix.lower() == ".tsv" or tab_header else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=sep)
    try:
        columns = list(reader.fieldnames or [])
        if not columns:
            raise DataError(
                f"{file} is empty: it has no header row", fix="add a header row naming the columns"
            )
        for record in reader:
            yield reader.line_num, record, columns
    except csv.Error as err:
        raise DataError(
            f"line {reader.line_num} of {file} is not valid CSV: {err}", fix="fix the quoting"
        ) from None


def _jsonl_records(file: Path, text: str) -> Iterator[tuple[int, dict, list[str]]]:
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"line {line_number} of {file} is not valid JSON: {err.msg}", fix="fix that line"
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"line {line_number} of {file} is a JSON {type(record).__name__}, not an object",
                fix='write one object per line, e.g. {"filepath": "a.jpg", "caption": "a dog"}',
            )
        yield line_number, record, list(record)


def read_captions(
    captions_file: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    image_key: str | None = None,
    caption_key: str | None = None,
    sep: str | None = None,
) -> list[Example]:
    """The examples of a captions file; image paths are relative to `root` (default: the file's folder)."""
    file = Path(captions_file)
    root = Path(root) if root is not None else file.parent
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(
            f"captions file {file} does not exist", fix="pass the path of a .csv, .tsv or .jsonl file"
        ) from None
    except UnicodeDecodeError as err:
        raise DataError(f"{file} is not UTF-8 text: {err}", fix="save the captions file as UTF-8") from None
    except OSError as err:
        raise DataError(
            f"captions file {file} cannot be read: {err}", fix="check the path and permissions"
        ) from None
    suffix = file.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        records = _jsonl_records(file, text)
    elif suffix in (".csv", ".tsv", ".txt"):
        records = _csv_records(file, text, sep)
    else:
        raise DataError(
            f"{file}: unknown captions file type {suffix!r}",
            fix="use a .csv, .tsv or .jsonl file",
        )

    examples, keys = [], None
    for line, record, columns in records:
        where = f"line {line} of {file}"
        if keys is None:  # from the header (CSV) or the first object (JSONL)
            keys = (
                _pick_key(columns, image_key, IMAGE_KEYS, "image", file),
                _pick_key(columns, caption_key, CAPTION_KEYS, "caption", file),
            )
        values = []
        for key in keys:
            value = record.get(key)
            if not isinstance(value, str) or not value.strip():
                problem = (
                    "is missing"
                    if value is None
                    else ("is empty" if isinstance(value, str) else "is not text")
                )
                raise DataError(f"{where}: {key!r} {problem}", fix=f"give every row a non-empty {key!r}")
            values.append(value)
        image = root / values[0].strip()
        if not image.is_file():
            raise DataError(
                f"{where}: image {values[0].strip()!r} does not exist (looked for {image})",
                fix="fix the path, or pass root= when paths are relative to another folder",
            )
        examples.append(Example(image, values[1], where=where))
    if not examples:
        raise DataError(f"{file} has no examples", fix="add one row per image: its path and its caption")
    return examples


def read_image_folder(root: str | os.PathLike) -> tuple[list[Example], list[str]]:
    """(examples, class names) of a folder with one subfolder of images per class, classes sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder", fix="pass a folder with one subfolder of images per class")
    classnames = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    examples = []
    for label, name in enumerate(classnames):
        for image in sorted((root / name).iterdir()):
            if image.suffix.lower() in IMAGE_EXTENSIONS and image.is_file():
                examples.append(Example(image, name, label, where=f"class folder {root / name}"))
    if not examples:
        raise DataError(
            f"{root} has no images in class subfolders",
            fix=f"put images ({', '.join(IMAGE_EXTENSIONS)}) in one subfolder per class",
        )
    return examples, classnames


# --- loading batches ----------------------------------------------------------------------------------------


def _load_images(
    examples: Sequence[Example], preprocess: BatchPreprocess, workers: int | None
) -> torch.Tensor:
    try:
        return preprocess.batch([str(e.image) for e in examples], workers=workers)
    except (ClipcoreError, OSError, ValueError) as err:
        # Find the culprit so the message can name its line.
        for example in examples:
            try:
                preprocess.batch([str(example.image)], workers=1)
            except (ClipcoreError, OSError, ValueError) as one:
                raise DataError(
                    f"{example.where}: image {example.image} cannot be used: {one}",
                    fix="replace or remove that image",
                ) from None
        raise DataError(f"a batch of images failed to load: {err}", fix="check the images") from None


def _tokenize(examples: Sequence[Example], tokenizer: Tokenizer) -> torch.Tensor:
    try:
        return tokenizer([e.caption for e in examples])
    except ClipcoreError as err:
        for example in examples:
            try:
                tokenizer([example.caption])
            except ClipcoreError as one:
                raise DataError(
                    f"{example.where}: the caption cannot be tokenized: {one}", fix="shorten or fix it"
                ) from None
        raise DataError(f"a batch of captions failed to tokenize: {err}", fix="check the captions") from None


def _read_ahead(load: Callable[[int], Any], indices: Sequence[int]) -> Iterator[Any]:
    """load(i) for each i, the next one running in a background thread while the current one is used."""
    if not indices:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clipcore-data") as pool:
        pending = pool.submit(load, indices[0])
        try:
            for nxt in [*indices[1:], None]:
                result = pending.result()
                if nxt is not None:
                    pending = pool.submit(load, nxt)
                yield result
        finally:
            pending.cancel()


def caption_tokenizer(context_length: int = 77) -> Tokenizer:
    """clipcore's tokenizer for training captions: too long ones are truncated, as OpenCLIP trains."""
    from clipcore.tokenizer import tokenize

    return lambda texts: tokenize(texts, context_length=context_length, truncate=True)


class CaptionBatches:
    """(images, tokens) training batches of this rank, in a seeded order per epoch (a loop.BatchSource).

    `tokenizer=None` uses clipcore's tokenizer at `context_length` (truncating); `preprocess` is a
    `clipcore.preprocess.Preprocess` (anything with its `batch(paths, workers=...)`).
    """

    def __init__(
        self,
        examples: Sequence[Example],
        preprocess: BatchPreprocess,
        tokenizer: Tokenizer | None,
        batch_size: int,
        *,
        context_length: int = 77,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        workers: int | None = None,
    ) -> None:
        if batch_size < 1 or not (0 <= rank < world_size):
            raise DataError(
                f"batch_size = {batch_size}, rank = {rank}, world_size = {world_size} is not a valid split",
                fix="use batch_size >= 1 and 0 <= rank < world_size",
            )
        self.examples = list(examples)
        self.preprocess = preprocess
        self.tokenizer = tokenizer if tokenizer is not None else caption_tokenizer(context_length)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.rank, self.world_size, self.workers = rank, world_size, workers
        if len(self) == 0:
            raise DataError(
                f"{len(self.examples)} examples do not fill one global batch of {batch_size} x {world_size}",
                fix="add examples or lower the batch size",
            )

    def __len__(self) -> int:
        return len(self.examples) // (self.batch_size * self.world_size)

    def order(self, epoch: int) -> list[int]:
        """The epoch's order of example indices; the same on every rank."""
        n = len(self.examples)
        if not self.shuffle:
            return list(range(n))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=generator).tolist()

    def batch_examples(self, epoch: int, index: int, order: list[int] | None = None) -> list[Example]:
        order = order if order is not None else self.order(epoch)
        first = (index * self.world_size + self.rank) * self.batch_size
        return [self.examples[i] for i in order[first : first + self.batch_size]]

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(epoch)

        def load(index: int) -> tuple[torch.Tensor, torch.Tensor]:
            examples = self.batch_examples(epoch, index, order)
            return _load_images(examples, self.preprocess, self.workers), _tokenize(examples, self.tokenizer)

        return _read_ahead(load, range(start, len(self)))


class LabelledBatches:
    """(images, labels) evaluation batches over all examples in order (the last batch may be short)."""

    def __init__(
        self,
        examples: Sequence[Example],
        preprocess: BatchPreprocess,
        batch_size: int,
        *,
        workers: int | None = None,
    ) -> None:
        self.examples, self.preprocess, self.batch_size, self.workers = (
            list(examples),
            preprocess,
            batch_size,
            workers,
        )

    def __len__(self) -> int:
        return -(-len(self.examples) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        def load(index: int) -> tuple[torch.Tensor, torch.Tensor]:
            examples = self.examples[index * self.batch_size : (index + 1) * self.batch_size]
            labels = torch.tensor([e.label for e in examples], dtype=torch.long)
            return _load_images(examples, self.preprocess, self.workers), labels

        return _read_ahead(load, range(len(self)))
