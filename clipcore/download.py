"""Fetching checkpoints into the local cache: verified, resumable, atomic, and safe under concurrent processes.

The promise: a file at a final cache path has been checked against its SHA-256 (or, for a URL with no known
hash, downloaded completely). It only ever appears there through an atomic rename, so a crash at any moment,
even SIGKILL, leaves either nothing or the verified file, and the next call picks the work up again.

For a file `X` the cache root holds:

    X              the verified file (OpenAI's `clip` uses the same root and names, so its files are reused)
    X.part         the download in progress; the next call resumes it with an HTTP Range request
    X.lock         flock()ed while a process downloads X. The kernel drops the lock when its holder dies, so
                   a crashed process never leaves a stale lock. The file itself is kept: deleting a lock file
                   races with processes that have it open.
    X.sha256.json  {"sha256", "size", "mtime_ns", "inode", "ctime_ns", "url"}: the hash X had when it was
                   last verified, so a 1.7 GB file is rehashed only when its stat() changes.

Environment: CLIPCORE_CACHE (cache root, below `root=`), CLIPCORE_MIRROR (base URL replacing OpenAI's for
registry names and OpenAI URLs), CLIPCORE_OFFLINE=1 (never touch the network).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import ssl
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clipcore.errors import (
    CheckpointError,
    ChecksumError,
    ConfigError,
    DownloadError,
    OfflineError,
    UnknownModelError,
)
from clipcore.progress import progress_bar
from spec.checkpoints import OPENAI_BASE_URL, KnownCheckpoint, available_models, get_checkpoint

try:
    import fcntl
except ImportError:  # not POSIX: downloads still work, but concurrent processes are not serialised
    fcntl = None

__all__ = [
    "DEFAULT_CACHE",
    "LOCAL_MODELS",
    "cache_dir",
    "download",
    "known_checkpoint",
    "local_model",
    "register_checkpoint",
    "resolve",
    "unregister_checkpoint",
]

DEFAULT_CACHE = "~/.cache/clip"  # OpenAI's `clip.load` default, so files a user already has are found
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")  # two letters at least: "C:" is a drive, not a scheme
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_HELPER_SUFFIXES = (".part", ".lock", ".sha256.json")
_REDIRECTS = {300, 301, 302, 303, 307, 308}
_RETRY_STATUS = {408, 429}  # plus every 5xx: the server asks to be tried again later
_GONE = {
    403: "refused access to",
    404: "has no file at",
    410: "no longer serves",
}
_TRUE = {"1", "true", "yes", "on"}

# Checkpoints known only to this process (a private mirror's extra files, tests): name -> entry.
_EXTRA: dict[str, KnownCheckpoint] = {}

# Models shipped inside the package (clipcore/data): name -> file name. Never downloaded, never cached.
LOCAL_MODELS: dict[str, str] = {"demo": "demo.safetensors"}
_PACKAGE_DATA = Path(__file__).parent / "data"


# ---------------------------------------------------------------------------------------------------------
# Where files come from and where they go


def register_checkpoint(checkpoint: KnownCheckpoint) -> None:
    """Let `download(checkpoint.name)` fetch `checkpoint` (its path below the mirror or OpenAI base URL, with
    the SHA-256 as the second-to-last segment, as for OpenAI's files). Official names cannot be replaced."""
    if checkpoint.name in available_models() or checkpoint.name in LOCAL_MODELS:
        raise ConfigError(f"{checkpoint.name!r} is a released or bundled checkpoint and cannot be re-registered",
                          fix="register the extra checkpoint under another name")
    if not _SHA256.fullmatch(checkpoint.sha256):
        raise ConfigError(f"checkpoint path {checkpoint.path!r} does not carry a SHA-256 as its directory",
                          fix="use the path '<64 lowercase hex digits>/<file name>'")
    _EXTRA[checkpoint.name] = checkpoint


def unregister_checkpoint(name: str) -> None:
    """Forget a checkpoint added with `register_checkpoint` (no error if there is none)."""
    _EXTRA.pop(name, None)


def known_checkpoint(name: str) -> KnownCheckpoint | None:
    """The registry entry for `name` (released or registered here), or None when it is not a known name."""
    if not isinstance(name, str):
        return None
    if name in _EXTRA:
        return _EXTRA[name]
    try:
        return get_checkpoint(name)
    except UnknownModelError:
        return None


def local_model(name: object) -> Path | None:
    """The package-data file of a bundled model name (see LOCAL_MODELS), or None for any other name."""
    if not isinstance(name, str) or name not in LOCAL_MODELS:
        return None
    path = _PACKAGE_DATA / LOCAL_MODELS[name]
    if not path.is_file():
        raise CheckpointError(f"the bundled model {name!r} should be at {path}, which is missing",
                              fix="reinstall clipcore (the file is package data), or rebuild it with "
                                  "scripts/train_demo.py")
    return path


def cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: `root` if given (an empty string counts as not given, as in `clip.load`), else
    $CLIPCORE_CACHE, else ~/.cache/clip."""
    chosen = os.fspath(root) if root is not None else ""
    return Path(chosen or os.environ.get("CLIPCORE_CACHE") or DEFAULT_CACHE).expanduser()


@dataclass(frozen=True)
class _Source:
    url: str
    filename: str
    sha256: str | None


def _is_url(text: str) -> bool:
    return _SCHEME.match(text) is not None


def _check_url(url: str) -> str:
    """`url` as we will request it (http/https only; non-ASCII percent-encoded), or a DownloadError."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise DownloadError(f"{url!r} is not a valid URL: it contains control characters")
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError as err:
        raise DownloadError(f"{url!r} is not a valid URL: {err}") from None
    if parts.scheme.lower() not in ("http", "https"):
        fix = "pass the file's path instead of a file:// URL" if parts.scheme.lower() == "file" else None
        raise DownloadError(f"{url!r}: only http:// and https:// URLs can be downloaded", fix=fix)
    if not parts.hostname or re.search(r"\s", parts.netloc):
        raise DownloadError(f"{url!r} is not a valid URL: it has no usable host name")
    safe = "/%:@!$&'()*+,;=~"
    return urllib.parse.urlunsplit(
        (parts.scheme.lower(), parts.netloc, urllib.parse.quote(parts.path or "/", safe=safe),
         urllib.parse.quote(parts.query, safe=safe + "?"), "")
    )


def _check_sha256(value: str) -> str:
    digest = value.strip().lower() if isinstance(value, str) else ""
    if not _SHA256.fullmatch(digest):
        raise DownloadError(f"sha256={value!r} is not a SHA-256 digest",
                            fix="pass the 64 hexadecimal digits of the file's SHA-256")
    return digest


def _mirror(mirror: str | None) -> str | None:
    base = mirror if mirror is not None else os.environ.get("CLIPCORE_MIRROR", "")
    if not base or not base.strip():
        return None
    try:
        return _check_url(base).rstrip("/")
    except DownloadError as err:
        raise DownloadError(f"the mirror (mirror= or CLIPCORE_MIRROR) is unusable: {err.problem}",
                            fix="set CLIPCORE_MIRROR to an http(s) base URL with OpenAI's paths below it") from None


def _source(what: str | KnownCheckpoint, sha256: str | None, mirror: str | None) -> _Source:
    if not isinstance(what, (str, KnownCheckpoint)):
        raise UnknownModelError(f"cannot download {what!r}: expected a model name or a URL (a str)",
                                fix="pass a local file's path to clipcore.download.resolve instead")
    expected = _check_sha256(sha256) if sha256 is not None else None
    checkpoint = what if isinstance(what, KnownCheckpoint) else known_checkpoint(what)
    if checkpoint is not None:
        if expected is not None and expected != checkpoint.sha256:
            raise DownloadError(f"sha256={expected} contradicts the registry's {checkpoint.sha256} for "
                                f"{checkpoint.name!r}", fix="leave sha256 out for a known model name")
        url = _check_url(checkpoint.url(_mirror(mirror) or OPENAI_BASE_URL))
        return _Source(url, checkpoint.filename, checkpoint.sha256)
    if not isinstance(what, str) or not _is_url(what):
        raise UnknownModelError(f"no released checkpoint is called {what!r}",
                                fix=f"use one of {available_models()} or an http(s) URL")
    url = _check_url(what)
    base, mirrored = OPENAI_BASE_URL + "/", _mirror(mirror)
    if mirrored and url.startswith(base):  # the original host is gone; the mirror has the same paths
        url = f"{mirrored}/{url[len(base):]}"
    segments = urllib.parse.urlsplit(url).path.split("/")
    filename = urllib.parse.unquote(segments[-1])
    unsafe = "/" in filename or "\\" in filename or any(ord(c) < 0x20 for c in filename)  # ..%2F.. escapes
    if unsafe or filename in ("", ".", "..") or filename.endswith(_HELPER_SUFFIXES):
        raise DownloadError(f"{what!r} does not end in a usable file name",
                            fix="use a URL whose path ends with the checkpoint's file name")
    if expected is None and len(segments) >= 2 and _SHA256.fullmatch(segments[-2].lower()):
        expected = segments[-2].lower()  # OpenAI's layout: .../<sha256>/<file>
    return _Source(url, filename, expected)


def _offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    return os.environ.get("CLIPCORE_OFFLINE", "").strip().lower() in _TRUE


# ---------------------------------------------------------------------------------------------------------
# Checking what is in the cache


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".sha256.json")


def _stat_key(st: os.stat_result) -> dict[str, int]:
    # ctime cannot be set from user space, so even a same-size rewrite with a restored mtime is noticed.
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino, "ctime_ns": st.st_ctime_ns}


def _read_sidecar(target: Path) -> dict | None:
    try:
        record = json.loads(_sidecar(target).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_sidecar(target: Path, key: dict[str, int], sha256: str, url: str | None) -> None:
    record = {"sha256": sha256, **key, "url": url}
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError:  # a read-only cache still works; it is only rehashed on each use
        return
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, _sidecar(target))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@dataclass
class _Cached:
    state: str  # "missing" | "ok" | "mismatch"
    key: dict[str, int] | None = None
    actual: str | None = None
    wanted: str | None = None


def _stat(target: Path) -> os.stat_result | None:
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise DownloadError(f"cannot read {target}: {err.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DownloadError(f"{target} exists and is not a regular file",
                            fix="move it away, or choose another cache root (download_root / CLIPCORE_CACHE)")
    return st


def _check_cached(target: Path, expected: str | None, url: str | None) -> _Cached:
    """Is `target` the expected file? Without a known hash, the hash recorded when it was downloaded is the
    reference (trust on first use); a file with no record is taken as it is."""
    st = _stat(target)
    if st is None:
        return _Cached("missing")
    key, record = _stat_key(st), _read_sidecar(target)
    recorded = record.get("sha256") if record else None
    wanted = expected or (recorded if isinstance(recorded, str) else None)
    if record and isinstance(recorded, str) and all(record.get(k) == v for k, v in key.items()):
        actual = recorded
    else:
        try:
            actual = _hash_file(target)
        except OSError as err:
            raise DownloadError(f"cannot read {target}: {err.strerror}") from None
        if wanted is None or actual == wanted:
            after = _stat(target)
            if after is not None and _stat_key(after) == key:  # unchanged while we read it
                _write_sidecar(target, key, actual, url)
    return _Cached("ok" if wanted is None or actual == wanted else "mismatch", key, actual, wanted)


# ---------------------------------------------------------------------------------------------------------
# Transfer


class _Retry(Exception):
    """A failure worth another attempt (connection trouble, 5xx); `after` is the server's Retry-After."""

    def __init__(self, reason: str, after: float | None = None):
        super().__init__(reason)
        self.reason, self.after = reason, after


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # Redirects come back as HTTPError and are followed by `_Transfer._open`, which limits them, keeps the
    # Range header and refuses schemes other than http(s).
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _content_range(value: str | None) -> tuple[int, int, int | None] | None:
    match = _CONTENT_RANGE.fullmatch(value.strip()) if value else None
    if match is None:
        return None
    start, end = int(match[1]), int(match[2])
    total = None if match[3] == "*" else int(match[3])
    if end < start or (total is not None and end >= total):
        return None
    return start, end, total


def _retry_after(headers: object) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


class _Transfer:
    """One file's download into `<target>.part`, resumed and retried, then verified and published."""

    def __init__(self, source: _Source, target: Path, *, progress: bool, timeout: float, retries: int,
                 backoff: float, max_redirects: int):
        self.src, self.target = source, target
        self.part = target.with_name(target.name + ".part")
        self.progress, self.timeout, self.retries = progress, timeout, retries
        self.backoff, self.max_redirects = backoff, max_redirects
        self.opener = urllib.request.build_opener(_NoRedirect())
        self.hasher, self.size, self.total = hashlib.sha256(), 0, None
        self.resumed = False  # the .part holds bytes from an earlier answer (or an earlier run)
        self.restarted = False

    # -- the .part file: its length and running hash always describe what is on disk

    def _load_part(self) -> None:
        try:
            with open(self.part, "rb") as f:
                while block := f.read(_CHUNK):
                    self.hasher.update(block)
                    self.size += len(block)
        except FileNotFoundError:
            return
        except OSError as err:
            raise DownloadError(f"cannot read the partial download {self.part}: {err.strerror}",
                                fix=f"delete {self.part}") from None

    def _restart(self) -> None:
        try:
            open(self.part, "wb").close()
        except OSError as err:
            raise self._disk_error(err) from None
        self.hasher, self.size, self.total, self.resumed = hashlib.sha256(), 0, None, False

    def _disk_error(self, err: OSError) -> DownloadError:
        return DownloadError(f"cannot write {self.part}: {err.strerror or err}",
                             fix="free disk space, or point download_root / CLIPCORE_CACHE elsewhere")

    # -- HTTP

    def _open(self, offset: int) -> http.client.HTTPResponse:
        url = self.src.url
        headers = {"User-Agent": "clipcore (python-urllib)", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        for _ in range(self.max_redirects + 1):
            try:
                return self.opener.open(urllib.request.Request(url, headers=headers), timeout=self.timeout)
            except urllib.error.HTTPError as err:
                with contextlib.closing(err):
                    location = err.headers.get("Location") if err.headers is not None else None
                    if err.code in _REDIRECTS and location:
                        url = self._redirect(url, location)
                        continue
                    if err.code == 416 and offset:  # the .part is not a prefix the server can continue
                        self._restart()
                        raise _Retry(f"the server cannot resume at byte {offset} (HTTP 416)") from None
                    self._http_error(err.code, url, err.headers)
            except urllib.error.URLError as err:
                if isinstance(err.reason, ssl.SSLCertVerificationError):
                    raise DownloadError(f"the TLS certificate of {url} cannot be verified: {err.reason}",
                                        fix="fix the system's CA certificates or use another mirror") from None
                raise _Retry(f"cannot connect: {self._why(err.reason)}") from None
            except http.client.InvalidURL as err:
                raise DownloadError(f"{url!r} is not a valid URL: {err}") from None
            except (OSError, http.client.HTTPException) as err:  # timeouts, resets, garbled status lines
                raise _Retry(f"no valid answer: {self._why(err)}") from None
        raise DownloadError(f"{self.src.url} redirects more than {self.max_redirects} times (last: {url})",
                            fix="the server is misconfigured (a redirect loop?); set CLIPCORE_MIRROR to "
                                "another mirror with the same paths")

    def _redirect(self, url: str, location: str) -> str:
        try:
            return _check_url(urllib.parse.urljoin(url, location))
        except DownloadError as err:
            raise DownloadError(f"{url} redirects to {location!r}, which cannot be followed: {err.problem}",
                                fix="set CLIPCORE_MIRROR to a mirror with the same paths") from None

    def _http_error(self, code: int, url: str, headers: object) -> None:
        if code >= 500 or code in _RETRY_STATUS:
            raise _Retry(f"HTTP {code} from {url}", _retry_after(headers))
        where = url if url == self.src.url else f"{url} (redirected from {self.src.url})"
        what = _GONE.get(code, f"answered HTTP {code} for")
        raise DownloadError(
            f"the server {what} {where} (HTTP {code})",
            fix="set CLIPCORE_MIRROR to a mirror with the same paths (the original OpenAI host no longer "
                f"serves the files), or download the file yourself and put it at {self.target}",
        )

    def _why(self, err: object) -> str:
        if isinstance(err, TimeoutError):
            return f"no data within the {self.timeout:g} s timeout"
        return str(err) or type(err).__name__

    # -- one attempt: request from the current offset, append to the .part until the body ends

    def _attempt(self) -> None:
        with self._open(self.size) as resp:
            total = self._accept(resp, self.size)
            try:
                with open(self.part, "ab") as f, progress_bar(total, self.size, self.target.name,
                                                              self.progress) as bar:
                    while True:
                        try:
                            block = resp.read1(_CHUNK)
                        except (OSError, http.client.HTTPException) as err:
                            raise _Retry(f"the connection broke after {self.size} bytes: "
                                         f"{self._why(err)}") from None
                        if not block:
                            break
                        f.write(block)
                        self.hasher.update(block)
                        self.size += len(block)
                        bar.update(len(block))
            except OSError as err:  # only the file can raise OSError here: network errors became _Retry
                raise self._disk_error(err) from None
        if total is not None and self.size != total:
            if self.size > total:
                self._restart()
            raise _Retry(f"the server sent {self.size} of {total} bytes")

    def _accept(self, resp: http.client.HTTPResponse, offset: int) -> int | None:
        """Check the answer's status and headers; the full size of the file when the server tells it."""
        encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise DownloadError(f"{self.src.url} was sent {encoding}-encoded although identity was asked",
                                fix="use another mirror (CLIPCORE_MIRROR)")
        length = resp.length  # what http.client will read; None for chunked or close-delimited bodies
        if resp.status in (200, 203):
            if offset:  # the server ignored Range: start again from byte 0
                self._restart()
            self.total = length
            return length
        if resp.status != 206:
            raise DownloadError(f"{self.src.url} answered with the unexpected HTTP status {resp.status}",
                                fix="use another mirror (CLIPCORE_MIRROR)")
        span = _content_range(resp.headers.get("Content-Range"))
        if span is None or span[0] != offset or (length is not None and length != span[1] - span[0] + 1):
            self._restart()
            raise _Retry(f"the server answered a range request with a wrong Content-Range "
                         f"({resp.headers.get('Content-Range')!r} for byte {offset} on)")
        total = span[2] if span[2] is not None else None
        if self.total is not None and total is not None and total != self.total:
            self._restart()  # the file changed on the server between two answers
            raise _Retry(f"the file's size changed from {self.total} to {total} bytes")
        self.total, self.resumed = total, self.resumed or offset > 0
        return total

    # -- the whole download

    def run(self) -> None:
        self._load_part()
        failures, furthest = 0, self.size
        while True:
            try:
                complete = self.src.sha256 is not None and self.size and self._digest() == self.src.sha256
                if not complete:  # a .part finished by a process killed before its rename needs no request
                    self._attempt()
            except _Retry as err:
                if self.size >= furthest + _CHUNK:  # real progress (1 MiB further than ever) is not a failure
                    furthest, failures = self.size, 0
                failures += 1
                if failures > self.retries:
                    raise DownloadError(
                        f"could not download {self.src.url} ({failures} attempts): {err.reason}",
                        fix=(f"check the network and the server, or set CLIPCORE_MIRROR; the next call "
                             f"resumes from the {self.size} bytes kept in {self.part}" if self.size else
                             "check the network and the server, or set CLIPCORE_MIRROR"),
                    ) from None
                delay = min(self.backoff * 2 ** (failures - 1), 60 * self.backoff)
                time.sleep(min(max(delay, err.after or 0.0), 60 * self.backoff))
                continue
            actual = self._digest()
            if self.src.sha256 is None or actual == self.src.sha256:
                self._publish(actual)
                return
            if self.resumed and not self.restarted:  # stitched: the kept .part prefix may be stale or damaged
                self._restart()
                self.restarted = True
                continue
            self._discard()
            raise ChecksumError(
                f"the file downloaded from {self.src.url} has SHA-256 {actual}, expected {self.src.sha256}",
                fix=f"the server sends another file: check the URL, CLIPCORE_MIRROR or the expected hash; "
                    f"nothing was saved at {self.target}",
            )

    def _digest(self) -> str:
        return self.hasher.copy().hexdigest()

    def _discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.part)

    def _publish(self, digest: str) -> None:
        def durable_rename() -> None:
            fd = os.open(self.part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.part, self.target)
            _fsync_dir(self.target.parent)

        try:
            durable_rename()
        except OSError as err:
            raise DownloadError(f"cannot move {self.part} to {self.target}: {err.strerror or err}",
                                fix="check the cache directory's permissions and free space") from None
        st = _stat(self.target)
        if st is not None:
            _write_sidecar(self.target, _stat_key(st), digest, self.src.url)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def _interactive() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


@contextlib.contextmanager
def _locked(target: Path, announce: bool) -> Iterator[None]:
    lock = target.with_name(target.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise DownloadError(f"cannot create the lock file {lock}: {err.strerror}",
                            fix="make the cache directory writable, or point download_root / CLIPCORE_CACHE "
                                "at one that is") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if announce and _interactive():
                    print(f"waiting for another process to download {target.name} ...", file=sys.stderr)
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# ---------------------------------------------------------------------------------------------------------
# Public entry points


def download(
    name_or_url: str | KnownCheckpoint,
    root: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    progress: bool = True,
    *,
    mirror: str | None = None,
    offline: bool | None = None,
    timeout: float = 30.0,
    retries: int = 5,
    backoff: float = 1.0,
    max_redirects: int = 10,
) -> Path:
    """Fetch a checkpoint into the cache (unless it is there already) and return its verified path.

    `name_or_url`: a bundled model name (LOCAL_MODELS: its package-data file is returned as it is), a known
    model name (`available_models()`, or one added with `register_checkpoint`), a
    `KnownCheckpoint`, or an http(s) URL. A name's URL is the registry path below `mirror` /
    $CLIPCORE_MIRROR / OpenAI's base URL, and its SHA-256 is the one in that path. A URL is checked against
    `sha256` if given, else against a 64-hex directory in its path (OpenAI's layout). A URL with no hash at
    all is NOT verified: it is downloaded completely and atomically (with a warning), and the hash it had
    then is recorded, so later corruption of the cached copy is still noticed.

    `root`: the cache directory (default $CLIPCORE_CACHE, else ~/.cache/clip). `offline` (default
    $CLIPCORE_OFFLINE): never use the network; a missing file raises OfflineError naming where it belongs.

    Every connect and read waits at most `timeout` seconds. Connection errors, timeouts, short bodies and
    HTTP 5xx/408/429 are retried up to `retries` times in a row, after `backoff` * 2**n seconds (capped at
    60 * `backoff`, Retry-After honoured within that cap); each retry resumes where the data stopped. An
    attempt that gets at least 1 MiB further than any before does not count. Other 4xx answers fail at once.

    Raises DownloadError (bad URL, HTTP error, retries exhausted), ChecksumError (the server's file has
    another hash: nothing is kept), OfflineError.
    """
    bundled = local_model(name_or_url)
    if bundled is not None:  # shipped with the package: nothing to fetch
        return bundled
    source = _source(name_or_url, sha256, mirror)
    if retries < 0 or timeout <= 0 or backoff < 0 or max_redirects < 0:
        raise DownloadError(f"invalid download settings: retries={retries}, timeout={timeout}, "
                            f"backoff={backoff}, max_redirects={max_redirects}",
                            fix="use a positive timeout and non-negative retries, backoff, max_redirects")
    root_dir = cache_dir(root)
    target = root_dir / source.filename
    cached = _check_cached(target, source.sha256, source.url)
    if cached.state == "ok":
        return target
    if cached.state == "mismatch":
        warnings.warn(f"{target} exists, but its SHA-256 {cached.actual} is not the expected {cached.wanted}; "
                      f"{'it cannot be re-downloaded offline' if _offline(offline) else 're-downloading it'}",
                      stacklevel=2)
    if _offline(offline):
        raise OfflineError(
            f"offline mode (CLIPCORE_OFFLINE) and {target} is "
            f"{'missing' if cached.state == 'missing' else 'not the expected file'}",
            fix=f"on a machine with network access download {source.url}"
                + (f" (SHA-256 {source.sha256})" if source.sha256 else "")
                + f" and copy it to {target}; or unset CLIPCORE_OFFLINE",
        )
    if source.sha256 is None and cached.state == "missing":
        warnings.warn(f"{source.url} has no known SHA-256, so the download can only be checked for "
                      f"completeness; pass sha256=... to verify it", stacklevel=2)
    try:
        root_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create the cache directory {root_dir}: {err.strerror}",
                            fix="point download_root / CLIPCORE_CACHE at a writable directory") from None
    with _locked(target, announce=progress):
        # Another process may have finished this file while we waited for the lock.
        st = _stat(target)
        changed = st is not None and _stat_key(st) != cached.key
        if changed and _check_cached(target, source.sha256, source.url).state == "ok":
            return target
        _Transfer(source, target, progress=progress, timeout=timeout, retries=retries, backoff=backoff,
                  max_redirects=max_redirects).run()
    return target


def resolve(name_or_path_or_url: str | os.PathLike[str] | KnownCheckpoint,
            root: str | os.PathLike[str] | None = None, **kwargs: object) -> Path:
    """The local path of a checkpoint: a bundled name (LOCAL_MODELS, e.g. "demo") is the package's own file; a
    known name or a URL is downloaded (see `download`, which gets `root` and `kwargs`); an existing local path
    is returned as given (`~` expanded). Names come first, as in `clip.load`, so a file called "RN50" in the
    working directory does not shadow the released model."""
    what = name_or_path_or_url
    if isinstance(what, KnownCheckpoint):
        return download(what, root, **kwargs)
    try:
        text = os.fspath(what)
    except TypeError:
        raise UnknownModelError(f"{what!r} is not a model name, a URL or a path",
                                fix=f"use one of {available_models()}, a URL, or a checkpoint file's path") from None
    bundled = local_model(what)
    if bundled is not None:
        return bundled
    if isinstance(what, str) and known_checkpoint(what) is not None:  # a Path is always a local file
        return download(what, root, **kwargs)
    path = Path(os.fsdecode(text)).expanduser()
    if path.exists():
        return path
    if isinstance(what, str) and _is_url(what):
        return download(what, root, **kwargs)
    raise UnknownModelError(
        f"{os.fsdecode(text)!r} is not a known model name, an http(s) URL or an existing file",
        fix=f"use one of {available_models()}, a URL, or the path of a checkpoint file",
    )
