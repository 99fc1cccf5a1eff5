"""Downloads: clipcore.download against OpenAI's clip._download, the same file from the same local HTTP server
(conformance/httpserver.py on 127.0.0.1), same run. Both verify the SHA-256 in the URL's path.

    pytest benchmarks/bench_download.py -s

- fresh: an empty cache each round (clipcore streams to `.part`, hashing while writing, then renames;
  OpenAI's loader writes the file, then reads it back to hash it);
- cached: the file is already there (OpenAI's loader re-hashes the whole file on every call; clipcore checks a
  small verified-hash record beside it).
No target is set for downloads (the issue asks for safety, not speed): the rows are for information.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil

import pytest

import clipcore
from benchmarks import harness
from conformance.httpserver import FileServer
from conformance.reference import import_openai_clip

SIZE_MB = 64
QUICK_SIZE_MB = 4


@pytest.fixture(scope="module")
def served():
    data = os.urandom((QUICK_SIZE_MB if harness.quick() else SIZE_MB) << 20)
    path = f"/models/{hashlib.sha256(data).hexdigest()}/model.pt"
    with FileServer() as server:
        server.route(path, data)
        yield server.url(path), len(data)


def _quiet(fn):
    """OpenAI's loader draws a tqdm bar on stderr: keep it out of the timing output."""
    def run():
        with contextlib.redirect_stderr(io.StringIO()):
            return fn()
    return run


@pytest.mark.parametrize("state", ["fresh", "cached"])
def test_download(benchmark, served, tmp_path, state):
    url, size = served
    clip = import_openai_clip()
    ours_root, ref_root = tmp_path / "ours", tmp_path / "reference"

    def ours():
        if state == "fresh":
            shutil.rmtree(ours_root, ignore_errors=True)
        return clipcore.download(url, root=ours_root, progress=False)

    def reference():
        if state == "fresh":
            shutil.rmtree(ref_root, ignore_errors=True)
        return clip.clip._download(url, str(ref_root))

    if state == "cached":  # fill both caches first
        ours(), _quiet(reference)()
    mine, theirs = harness.interleave(benchmark, harness.timed(ours), harness.timed(_quiet(reference)),
                                      harness.rounds(5))
    paired = sorted(t / m for m, t in zip(mine, theirs, strict=True))
    harness.record(benchmark, f"download {size >> 20} MB from a local server, {state}", min(mine), min(theirs), "s",
                   lower_is_better=True, ratio_range=(paired[0], paired[-1]), reference_name="clip._download")
    assert (ours_root / "model.pt").read_bytes() == (ref_root / "model.pt").read_bytes()
