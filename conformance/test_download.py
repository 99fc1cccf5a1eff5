"""clipcore.download against a local, scriptable HTTP server: verification, resume, retries, timeouts,
redirects, offline mode, the verification cache, and several processes (one of them SIGKILLed) at once."""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clipcore.download import cache_dir, download, register_checkpoint, resolve, unregister_checkpoint
from clipcore.errors import ChecksumError, ConfigError, DownloadError, OfflineError, UnknownModelError
from clipcore.progress import TextBar
from conformance.httpserver import FileServer
from spec.checkpoints import KnownCheckpoint, get_checkpoint

# The module itself (not a `download` function the package may re-export under the same name).
dl = importlib.import_module("clipcore.download")
REPO = Path(__file__).resolve().parents[1]
FAST = {"progress": False, "timeout": 2.0, "retries": 3, "backoff": 0.01}


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("CLIPCORE_CACHE", "CLIPCORE_MIRROR", "CLIPCORE_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("NO_PROXY", "no_proxy"):  # a proxy in the environment must not intercept the local server
        monkeypatch.setenv(var, "127.0.0.1,localhost")


@pytest.fixture
def server():
    with FileServer() as s:
        yield s


@pytest.fixture
def root(tmp_path):
    return tmp_path / "cache"


def files_in(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()} if root.exists() else set()


# ---------------------------------------------------------------------------------------------------------
# The normal path and the verification cache


def test_download_verifies_and_publishes(server, root):
    data = blob(700_000)
    server.route("/m/model.pt", data)
    path = download(server.url("/m/model.pt"), root, sha256=sha(data), **FAST)
    assert path == root / "model.pt" and isinstance(path, Path)
    assert path.read_bytes() == data
    assert files_in(root) == {"model.pt", "model.pt.lock", "model.pt.sha256.json"}
    record = json.loads((root / "model.pt.sha256.json").read_text())
    st = path.stat()
    assert record["sha256"] == sha(data) and record["size"] == st.st_size and record["mtime_ns"] == st.st_mtime_ns
    assert len(server.hits()) == 1 and server.bytes_sent() == len(data)


def test_cached_file_is_reused_without_network_or_rehash(server, root, monkeypatch):
    data = blob(300_000, 1)
    server.route("/m/a.pt", data)
    first = download(server.url("/m/a.pt"), root, sha256=sha(data), **FAST)
    hashed = []
    real_hash = dl._hash_file
    monkeypatch.setattr(dl, "_hash_file", lambda p: hashed.append(p) or real_hash(p))
    assert download(server.url("/m/a.pt"), root, sha256=sha(data), **FAST) == first
    assert len(server.hits()) == 1, "a verified cached file must not touch the network"
    assert hashed == [], "the sidecar's (size, mtime) record must spare the rehash"


@pytest.mark.parametrize("change", ["same-size-same-mtime", "appended"])
def test_changed_cached_file_is_rehashed_and_redownloaded_with_warning(server, root, change):
    data = blob(300_000, 2)
    server.route("/m/b.pt", data)
    path = download(server.url("/m/b.pt"), root, sha256=sha(data), **FAST)
    st = path.stat()
    if change == "appended":
        with open(path, "ab") as f:
            f.write(b"junk")
    else:  # a rewrite that keeps size and mtime: caught by the inode/ctime part of the record
        with open(path, "r+b") as f:
            f.seek(1000)
            f.write(b"\x00" * 16)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.warns(UserWarning, match="re-downloading"):
        again = download(server.url("/m/b.pt"), root, sha256=sha(data), **FAST)
    assert again.read_bytes() == data
    assert len(server.hits()) == 2


def test_file_already_in_openai_cache_is_verified_once_and_reused(server, root, monkeypatch):
    """A file put there by OpenAI's `clip` (no sidecar) is hashed once, then trusted by its stat record."""
    data = blob(200_000, 3)
    root.mkdir()
    (root / "c.pt").write_bytes(data)
    server.route("/m/c.pt", data)
    hashed = []
    real_hash = dl._hash_file
    monkeypatch.setattr(dl, "_hash_file", lambda p: hashed.append(p) or real_hash(p))
    for _ in range(3):
        assert download(server.url("/m/c.pt"), root, sha256=sha(data), **FAST) == root / "c.pt"
    assert len(hashed) == 1 and server.hits() == []


def test_directory_at_target_is_an_error(server, root):
    (root / "d.pt").mkdir(parents=True)
    with pytest.raises(DownloadError, match="not a regular file"):
        download(server.url("/m/d.pt"), root, sha256=sha(b"x"), **FAST)


# ---------------------------------------------------------------------------------------------------------
# Integrity: checksums, truncation, resume


def test_wrong_checksum_leaves_nothing(server, root):
    data = blob(250_000, 4)
    server.route("/m/e.pt", data)
    wrong = sha(b"something else")
    with pytest.raises(ChecksumError) as info:
        download(server.url("/m/e.pt"), root, sha256=wrong, **FAST)
    message = str(info.value)
    assert server.url("/m/e.pt") in message and wrong in message and sha(data) in message
    assert not (root / "e.pt").exists() and not (root / "e.pt.part").exists()
    assert len(server.hits()) == 1, "a fresh download with the wrong hash is not retried"


def test_truncated_response_is_resumed_with_range(server, root):
    data = blob(1_000_000, 5)
    server.route("/m/f.pt", data, truncate_after=400_000, truncate_times=1)
    path = download(server.url("/m/f.pt"), root, sha256=sha(data), **FAST)
    assert path.read_bytes() == data
    hits = server.hits("/m/f.pt")
    assert [(h.range, h.status, h.sent) for h in hits] == [
        (None, 200, 400_000),
        ("bytes=400000-", 206, 600_000),
    ]


def test_truncated_response_without_range_support_restarts_from_zero(server, root):
    data = blob(1_000_000, 6)
    server.route("/m/g.pt", data, ranges=False, truncate_after=300_000, truncate_times=2)
    path = download(server.url("/m/g.pt"), root, sha256=sha(data), **FAST)
    assert path.read_bytes() == data
    hits = server.hits("/m/g.pt")
    assert [(h.status, h.sent) for h in hits] == [(200, 300_000), (200, 300_000), (200, 1_000_000)]
    assert hits[1].range == "bytes=300000-"  # asked to resume, got 200: started over


def test_server_that_always_truncates_without_range_gives_up(server, root):
    data = blob(200_000, 7)
    server.route("/m/h.pt", data, ranges=False, truncate_after=50_000, truncate_times=100)
    with pytest.raises(DownloadError, match="50000 of 200000 bytes"):
        download(server.url("/m/h.pt"), root, sha256=sha(data), **{**FAST, "retries": 2})
    assert len(server.hits()) == 3
    assert not (root / "h.pt").exists()


def test_partial_file_from_an_earlier_run_is_resumed(server, root):
    data = blob(800_000, 8)
    root.mkdir()
    (root / "i.pt.part").write_bytes(data[:500_000])
    server.route("/m/i.pt", data)
    assert download(server.url("/m/i.pt"), root, sha256=sha(data), **FAST).read_bytes() == data
    assert [(h.range, h.sent) for h in server.hits()] == [("bytes=500000-", 300_000)]
    assert not (root / "i.pt.part").exists()


def test_partial_file_with_server_ignoring_range_restarts_cleanly(server, root):
    data = blob(800_000, 9)
    root.mkdir()
    (root / "j.pt.part").write_bytes(data[:500_000])
    server.route("/m/j.pt", data, ranges=False)
    assert download(server.url("/m/j.pt"), root, sha256=sha(data), **FAST).read_bytes() == data
    assert [(h.range, h.status, h.sent) for h in server.hits()] == [("bytes=500000-", 200, 800_000)]


def test_damaged_partial_file_is_discarded_after_a_failed_checksum(server, root):
    """A stale .part (another version, or garbage after a power cut) resumes into a wrong file: start over once."""
    data = blob(600_000, 10)
    root.mkdir()
    (root / "k.pt.part").write_bytes(blob(200_000, 99))
    server.route("/m/k.pt", data)
    assert download(server.url("/m/k.pt"), root, sha256=sha(data), **FAST).read_bytes() == data
    assert [(h.range, h.status) for h in server.hits()] == [("bytes=200000-", 206), (None, 200)]


def test_complete_partial_file_is_published_without_network(server, root):
    """Killed between the last byte and the rename: the next call only verifies and renames."""
    data = blob(300_000, 11)
    root.mkdir()
    (root / "l.pt.part").write_bytes(data)
    server.route("/m/l.pt", data)
    assert download(server.url("/m/l.pt"), root, sha256=sha(data), **FAST).read_bytes() == data
    assert server.hits() == []


def test_oversized_partial_file_gets_416_and_restarts(server, root):
    data = blob(300_000, 12)
    root.mkdir()
    (root / "m.pt.part").write_bytes(blob(400_000, 13))
    server.route("/m/m.pt", data)
    assert download(server.url("/m/m.pt"), root, sha256=sha(data), **FAST).read_bytes() == data
    assert [h.status for h in server.hits()] == [416, 200]


def test_wrong_content_range_restarts_from_zero(server, root):
    data = blob(500_000, 14)
    root.mkdir()
    (root / "n.pt.part").write_bytes(data[:100_000])
    server.route("/m/n.pt", data, bad_content_range=True)
    assert download(server.url("/m/n.pt"), root, sha256=sha(data), **FAST).read_bytes() == data
    assert [h.range for h in server.hits()] == ["bytes=100000-", None]


def test_body_without_content_length(server, root):
    data = blob(400_000, 15)
    server.route("/m/o.pt", data, content_length=False)
    assert download(server.url("/m/o.pt"), root, sha256=sha(data), **FAST).read_bytes() == data


def test_compressed_body_is_refused(server, root):
    data = blob(10_000, 16)
    server.route("/m/p.pt", data, headers={"Content-Encoding": "gzip"})
    with pytest.raises(DownloadError, match="gzip"):
        download(server.url("/m/p.pt"), root, sha256=sha(data), **FAST)
    assert not (root / "p.pt").exists()


# ---------------------------------------------------------------------------------------------------------
# Retries, redirects, timeouts, HTTP errors


def test_two_server_errors_then_success(server, root):
    data = blob(200_000, 17)
    server.route("/m/q.pt", data, fail_first=2, fail_status=500)
    assert download(server.url("/m/q.pt"), root, sha256=sha(data), **FAST).read_bytes() == data
    assert [h.status for h in server.hits()] == [500, 500, 200]


def test_garbled_answers_are_retried(server, root):
    data = blob(100_000, 31)
    server.route("/m/garbled.pt", data, garbage_first=2)
    assert download(server.url("/m/garbled.pt"), root, sha256=sha(data), **FAST).read_bytes() == data
    assert len(server.hits()) == 3


def test_persistent_server_errors_give_up_after_retries(server, root):
    server.route("/m/r.pt", b"x", fail_first=100, fail_status=503)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="503") as info:
        download(server.url("/m/r.pt"), root, sha256=sha(b"x"), **{**FAST, "retries": 2})
    assert "3 attempts" in str(info.value) and len(server.hits()) == 3
    assert time.monotonic() - start < 2


def test_retry_after_is_bounded_by_the_backoff_cap(server, root):
    data = blob(10_000, 18)
    server.route("/m/s.pt", data, fail_first=1, fail_status=429, retry_after="3600")
    start = time.monotonic()
    assert download(server.url("/m/s.pt"), root, sha256=sha(data), **FAST).read_bytes() == data
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("status", [404, 403, 410])
def test_missing_file_is_a_clear_error_without_retry(server, root, status):
    server.route("/m/t.pt", status=status)
    with pytest.raises(DownloadError) as info:
        download(server.url("/m/t.pt"), root, sha256=sha(b"x"), **FAST)
    assert not isinstance(info.value, ChecksumError)
    message = str(info.value)
    assert server.url("/m/t.pt") in message and f"HTTP {status}" in message and "CLIPCORE_MIRROR" in message
    assert len(server.hits()) == 1
    assert files_in(root) <= {"t.pt.lock"}


def test_redirect_chain_is_followed(server, root):
    data = blob(300_000, 19)
    server.route("/final/u.pt", data)
    server.route("/r1/u.pt", redirect=server.url("/final/u.pt"))  # absolute
    server.route("/r2/u.pt", redirect="/r1/u.pt")  # relative
    server.route("/r3/u.pt", redirect="../r2/u.pt")
    path = download(server.url("/r3/u.pt"), root, sha256=sha(data), **FAST)
    assert path == root / "u.pt" and path.read_bytes() == data
    assert [h.path for h in server.hits()] == ["/r3/u.pt", "/r2/u.pt", "/r1/u.pt", "/final/u.pt"]


def test_redirect_keeps_the_range_header(server, root):
    data = blob(300_000, 20)
    root.mkdir()
    (root / "v.pt.part").write_bytes(data[:100_000])
    server.route("/final/v.pt", data)
    server.route("/r/v.pt", redirect="/final/v.pt")
    assert download(server.url("/r/v.pt"), root, sha256=sha(data), **FAST).read_bytes() == data
    assert server.hits("/final/v.pt")[0].range == "bytes=100000-"


def test_too_long_redirect_chain_and_loop_are_errors(server, root):
    for i in range(1, 5):
        server.route(f"/c{i}/w.pt", redirect=f"/c{i - 1}/w.pt")
    server.route("/c0/w.pt", b"x")
    with pytest.raises(DownloadError, match="redirects more than 3 times"):
        download(server.url("/c4/w.pt"), root, sha256=sha(b"x"), **{**FAST, "max_redirects": 3})
    server.route("/loop/a.pt", redirect="/loop/b.pt")
    server.route("/loop/b.pt", redirect="/loop/a.pt")
    with pytest.raises(DownloadError, match="redirects more than 10 times"):
        download(server.url("/loop/a.pt"), root, sha256=sha(b"x"), **FAST)
    assert len(server.hits("/loop/a.pt")) == 6


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x.pt"])
def test_redirect_to_another_scheme_is_refused(server, root, target):
    server.route("/x/x.pt", redirect=target)
    with pytest.raises(DownloadError, match="cannot be followed"):
        download(server.url("/x/x.pt"), root, sha256=sha(b"x"), **FAST)


@pytest.mark.parametrize("where", ["before-headers", "after-headers", "after-some-data"])
def test_stalled_server_times_out(server, root, where):
    data = blob(500_000, 21)
    if where == "before-headers":
        server.route("/m/y.pt", data, stall_before_headers=True)
    else:
        server.route("/m/y.pt", data, stall_after=0 if where == "after-headers" else 10_000)
    timeout, retries = 0.4, 1
    start = time.monotonic()
    with pytest.raises(DownloadError, match="timeout") as info:
        download(server.url("/m/y.pt"), root, sha256=sha(data),
                 progress=False, timeout=timeout, retries=retries, backoff=0.01)
    elapsed = time.monotonic() - start
    assert timeout * (retries + 1) * 0.9 <= elapsed < timeout * (retries + 1) + 1.0, elapsed
    assert "2 attempts" in str(info.value)
    assert not (root / "y.pt").exists()


def test_connection_refused_is_retried_then_reported(root):
    with FileServer() as gone:
        url = gone.url("/m/z.pt")
    with pytest.raises(DownloadError, match="cannot connect"):
        download(url, root, sha256=sha(b"x"), **{**FAST, "retries": 1})


# ---------------------------------------------------------------------------------------------------------
# Names, mirrors, URLs, offline mode, cache root


@pytest.fixture
def tiny_checkpoint():
    data = blob(250_000, 22)
    checkpoint = KnownCheckpoint("tiny-test", f"{sha(data)}/tiny.pt", "ViT-B-32")
    register_checkpoint(checkpoint)
    yield checkpoint, data
    unregister_checkpoint(checkpoint.name)


def test_registry_name_through_mirror(server, root, monkeypatch, tiny_checkpoint):
    checkpoint, data = tiny_checkpoint
    server.route(f"/mirror/clip/models/{checkpoint.path}", data)
    monkeypatch.setenv("CLIPCORE_MIRROR", server.url("/mirror/clip/models/"))
    path = download("tiny-test", root, **FAST)
    assert path == root / "tiny.pt" and path.read_bytes() == data
    assert resolve("tiny-test", root, **FAST) == path
    assert len(server.hits()) == 1


def test_released_name_uses_mirror_path_and_registry_hash(server, root, monkeypatch):
    checkpoint = get_checkpoint("ViT-B/32")
    server.route(f"/m/{checkpoint.path}", b"not the real weights")
    monkeypatch.setenv("CLIPCORE_MIRROR", server.url("/m"))
    with pytest.raises(ChecksumError, match=checkpoint.sha256):
        download("ViT-B/32", root, **FAST)
    assert [h.path for h in server.hits()] == [f"/m/{checkpoint.path}"]
    # The full OpenAI URL goes to the mirror too: the original host is gone.
    with pytest.raises(ChecksumError):
        download(checkpoint.url(), root, **FAST)
    assert len(server.hits()) == 2


def test_openai_style_url_takes_the_hash_from_its_path(server, root):
    data = blob(100_000, 23)
    server.route(f"/clip/{sha(data)}/good.pt", data)
    server.route(f"/clip/{sha(b'other')}/bad.pt", data)
    assert download(server.url(f"/clip/{sha(data)}/good.pt"), root, **FAST).read_bytes() == data
    with pytest.raises(ChecksumError):
        download(server.url(f"/clip/{sha(b'other')}/bad.pt"), root, **FAST)


def test_url_without_hash_is_downloaded_with_a_warning_and_guarded_afterwards(server, root):
    data = blob(150_000, 24)
    server.route("/plain/open.pt", data)
    with pytest.warns(UserWarning, match="no known SHA-256"):
        path = download(server.url("/plain/open.pt"), root, **FAST)
    assert path.read_bytes() == data
    assert download(server.url("/plain/open.pt"), root, **FAST) == path and len(server.hits()) == 1
    with open(path, "r+b") as f:  # corrupted later: the hash recorded at download time notices it
        f.write(b"\xff" * 10)
    with pytest.warns(UserWarning, match="re-downloading"):
        assert download(server.url("/plain/open.pt"), root, **FAST).read_bytes() == data
    assert len(server.hits()) == 2


def test_offline_mode(server, root, monkeypatch):
    data = blob(100_000, 25)
    server.route("/m/off.pt", data)
    monkeypatch.setenv("CLIPCORE_OFFLINE", "1")
    with pytest.raises(OfflineError) as info:
        download(server.url("/m/off.pt"), root, sha256=sha(data), **FAST)
    message = str(info.value)
    assert str(root / "off.pt") in message and server.url("/m/off.pt") in message and sha(data) in message
    assert server.hits() == [] and not root.exists()
    download(server.url("/m/off.pt"), root, sha256=sha(data), **{**FAST, "offline": False})
    assert download(server.url("/m/off.pt"), root, sha256=sha(data), **FAST) == root / "off.pt"
    assert len(server.hits()) == 1


def test_offline_mode_with_a_wrong_cached_file(server, root, monkeypatch):
    root.mkdir()
    (root / "w.pt").write_bytes(b"wrong")
    monkeypatch.setenv("CLIPCORE_OFFLINE", "yes")
    with pytest.warns(UserWarning), pytest.raises(OfflineError, match="not the expected file"):
        download(server.url("/m/w.pt"), root, sha256=sha(b"right"), **FAST)
    assert (root / "w.pt").read_bytes() == b"wrong"  # a user's file is never deleted
    assert server.hits() == []


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://127.0.0.1/a.pt", "http://", "https://127.0.0.1:99999/a.pt",
    "http://127.0.0.1/", "http://127.0.0.1/dir/..", "http://exa mple.com/a.pt", "http://127.0.0.1/a\n.pt",
    "http://127.0.0.1/x.pt.part", "http://127.0.0.1/..%2F..%2Fescaped.pt", "http://127.0.0.1/a%0A.pt",
])
def test_malformed_or_unsupported_urls(root, url):
    with pytest.raises(DownloadError):
        download(url, root, sha256=sha(b"x"), **FAST)


def test_unusable_mirror(root, monkeypatch):
    monkeypatch.setenv("CLIPCORE_MIRROR", "file:///srv/clip")
    with pytest.raises(DownloadError, match="CLIPCORE_MIRROR"):
        download("RN50", root, **FAST)


@pytest.mark.parametrize("value", ["abc", "z" * 64, 12])
def test_bad_sha256_argument(root, value):
    with pytest.raises(DownloadError, match="SHA-256"):
        download("http://127.0.0.1/a.pt", root, sha256=value, **FAST)


def test_unknown_name(root):
    with pytest.raises(UnknownModelError, match="ViT-B/32"):
        download("ViT-B/99", root, **FAST)
    with pytest.raises(UnknownModelError):
        resolve("no/such/file.pt", root)


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "clip"
    monkeypatch.setenv("CLIPCORE_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir("") == tmp_path / "env"  # as in clip.load: an empty download_root means the default
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_resolve_returns_local_files_unchanged_and_downloads_urls(server, root, tmp_path):
    local = tmp_path / "mine.pt"
    local.write_bytes(b"weights")
    assert resolve(local) == local and resolve(str(local)) == local
    data = blob(50_000, 26)
    server.route("/m/r.pt", data)
    assert resolve(server.url("/m/r.pt"), root, sha256=sha(data), **FAST).read_bytes() == data
    with pytest.raises(DownloadError):
        resolve("file:///no/such.pt", root)


def test_registered_names_cannot_shadow_released_ones():
    with pytest.raises(ConfigError):
        register_checkpoint(KnownCheckpoint("RN50", f"{'0' * 64}/RN50.pt", "RN50"))
    with pytest.raises(ConfigError):
        register_checkpoint(KnownCheckpoint("x", "not-a-hash/x.pt", "RN50"))
    assert dl.known_checkpoint("x") is None and dl.known_checkpoint("RN50") == get_checkpoint("RN50")


# ---------------------------------------------------------------------------------------------------------
# Progress display


def test_progress_is_silent_without_a_terminal(server, root, capfd):
    data = blob(100_000, 27)
    server.route("/m/bar.pt", data)
    download(server.url("/m/bar.pt"), root, sha256=sha(data), **{**FAST, "progress": True})
    assert capfd.readouterr().err == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tqdm_installed", [True, False])
def test_progress_is_drawn_on_a_terminal(server, root, monkeypatch, tqdm_installed):
    data = blob(300_000, 33)
    server.route("/m/shown.pt", data)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    if not tqdm_installed:
        monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError: the built-in bar
    download(server.url("/m/shown.pt"), root, sha256=sha(data), **{**FAST, "progress": True})
    shown = terminal.getvalue()
    assert "shown.pt" in shown and "100%" in shown and ("293k" in shown or "293.0 KiB" in shown), shown
    assert ("ETA" in shown) == (not tqdm_installed)  # tqdm writes [elapsed<remaining, rate]
    terminal.truncate(0)
    download(server.url("/m/shown.pt"), root, sha256=sha(data), **{**FAST, "progress": False})
    assert terminal.getvalue() == ""


def test_built_in_bar_shows_size_rate_and_eta():
    stream = io.StringIO()
    bar = TextBar(total=10 * 2**20, initial=2**20, desc="x.pt", stream=stream)
    time.sleep(0.11)
    bar.update(2**20)
    bar.close()
    text = stream.getvalue()
    assert "x.pt" in text and "2.0 MiB/10.0 MiB" in text and "MiB/s" in text and "ETA" in text
    assert text.endswith("\n")


# ---------------------------------------------------------------------------------------------------------
# Several processes, and crashes

_CHILD = """
import sys
from clipcore.download import download
url, root, digest = sys.argv[1:4]
print("ready", flush=True)
sys.stdin.readline()
print(download(url, root, sha256=digest, progress=False, timeout=10, retries=2, backoff=0.05), flush=True)
"""


def _child(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    return subprocess.Popen([sys.executable, "-c", _CHILD, *args], cwd=REPO, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _reap(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
        for stream in (child.stdin, child.stdout, child.stderr):
            stream.close()


def test_four_processes_share_one_download(server, root):
    data = blob(1_500_000, 28)
    server.route("/m/shared.pt", data, rate=2_000_000)  # ~0.75 s: every process arrives during the transfer
    children = [_child([server.url("/m/shared.pt"), str(root), sha(data)]) for _ in range(4)]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
        for child in children:  # start them together
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=60) for child in children]
    finally:
        _reap(children)
    for child, (out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
        assert Path(out.strip()) == root / "shared.pt"
    assert (root / "shared.pt").read_bytes() == data
    hits = server.hits("/m/shared.pt")
    assert len(hits) == 1 and server.bytes_sent("/m/shared.pt") == len(data)
    assert not (root / "shared.pt.part").exists()


def test_threads_of_one_process_share_one_download(server, root):
    data = blob(800_000, 32)
    server.route("/m/threads.pt", data, rate=2_000_000)
    results, errors = [], []

    def fetch():
        try:
            results.append(download(server.url("/m/threads.pt"), root, sha256=sha(data), **FAST))
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == [] and results == [root / "threads.pt"] * 4
    assert len(server.hits()) == 1 and (root / "threads.pt").read_bytes() == data


def test_sigkill_mid_download_leaves_no_final_file_and_next_call_resumes(server, root):
    data = blob(2_000_000, 29)
    route = server.route("/m/killed.pt", data, rate=1_000_000)
    child = _child([server.url("/m/killed.pt"), str(root), sha(data)])
    part, target = root / "killed.pt.part", root / "killed.pt"
    try:
        assert child.stdout.readline().strip() == "ready"
        child.stdin.write("go\n")
        child.stdin.flush()
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size >= 300_000):
            assert time.monotonic() < deadline and child.poll() is None, child.stderr.read()
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        _reap([child])
    assert child.returncode == -signal.SIGKILL
    assert not target.exists()
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    # The kernel released the dead process's lock: nobody waits for it.
    with open(root / "killed.pt.lock", "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(f, fcntl.LOCK_UN)
    route.rate = None
    assert download(server.url("/m/killed.pt"), root, sha256=sha(data), **FAST).read_bytes() == data
    last = server.hits("/m/killed.pt")[-1]
    assert last.range == f"bytes={kept}-" and last.status == 206 and last.sent == len(data) - kept


def test_crash_before_rename_is_recovered(server, root, monkeypatch):
    """Any exception (or kill) between verification and rename leaves the final path empty; the next call
    publishes the verified .part without downloading again."""
    data = blob(300_000, 30)
    server.route("/m/late.pt", data)

    class Crash(BaseException):
        pass

    def crash(*args):
        raise Crash

    with monkeypatch.context() as patch, pytest.raises(Crash):
        patch.setattr(dl.os, "replace", crash)
        download(server.url("/m/late.pt"), root, sha256=sha(data), **FAST)
    assert not (root / "late.pt").exists() and (root / "late.pt.part").stat().st_size == len(data)
    assert download(server.url("/m/late.pt"), root, sha256=sha(data), **FAST).read_bytes() == data
    assert len(server.hits()) == 1
