"""Where data files live, and how they get there intact.

Every data set is a few files, each described by a :class:`RemoteFile`: the data set's directory
name, the file name, its canonical download URLs and its published checksum.  :func:`fetch`
turns one into a verified local path:

1. The data directory is the ``data_dir`` argument, else ``$OPTIMLAB_DATA_DIR``, else
   ``$XDG_CACHE_HOME/optimlab/data`` (``~/.cache/optimlab/data``).  A file lives at
   ``<data_dir>/<dataset>/<file>``.
2. A file that is there is checked against its published checksum before every use.  The result
   is remembered in a stamp under ``$XDG_CACHE_HOME/optimlab/verified/`` keyed by the file's
   path, device, inode, size, mtime and ctime, so a repeated load does not hash the file again;
   any change to the file changes its ctime, so a stale stamp never matches (see
   :func:`verify`).  The data directory itself is never written to here: it may be read-only.
3. A missing file is downloaded (unless ``download=False``) from the canonical URLs in order, or
   from ``$OPTIMLAB_DATA_MIRROR/<dataset>/<file>`` when that variable is set (an ``http://``,
   ``https://`` or ``file://`` base URL with the same layout as the data directory; it replaces
   the canonical URLs, for air-gapped machines and tests).  The download goes to a temporary file
   in the target directory, is hashed as it streams, and is renamed into place only when the
   checksum matches, so an interrupted or corrupt download never leaves a file behind.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .. import __version__

ENV_DATA_DIR = "OPTIMLAB_DATA_DIR"
ENV_MIRROR = "OPTIMLAB_DATA_MIRROR"
#: Seconds a download may wait for the server before it counts as failed.
TIMEOUT = 60.0
_CHUNK = 1 << 20
# A file whose ctime is this recent gets no stamp: a write in the same coarse clock tick as the
# hash could leave size, mtime and ctime all unchanged (the "racy clean" problem git also has).
_RACY_SECONDS = 2.0


class DataError(Exception):
    """A data file is missing, corrupt, unreadable or could not be downloaded."""


class DataMissingError(DataError, FileNotFoundError):
    """A data file is not in the data directory and may not (or cannot) be downloaded."""


class ChecksumError(DataError):
    """A data file does not have its published checksum."""


class DownloadError(DataError):
    """Every source of a data file failed."""


class FormatError(DataError):
    """A data file has the right checksum but not the expected content (or a test file)."""


@dataclass(frozen=True)
class RemoteFile:
    """One published data file.

    Attributes:
        dataset: directory of the data set inside the data directory (``"mnist"``).
        name: file name (``"train-images-idx3-ubyte.gz"``).
        urls: canonical download URLs, tried in order; empty if the file cannot be downloaded
            without a login.
        algorithm: ``"md5"``, ``"sha1"`` or ``"sha256"``: the hash the publisher gives.
        digest: the published hex digest.
        manual: for files with no URL, where a person gets the file.
    """

    dataset: str
    name: str
    urls: tuple[str, ...]
    algorithm: str
    digest: str
    manual: str = ""


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/optimlab``, else ``~/.cache/optimlab`` (a relative ``XDG_CACHE_HOME`` is ignored, per XDG)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "optimlab"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``data_dir``, else ``$OPTIMLAB_DATA_DIR``, else ``cache_home()/data``.

    An empty ``$OPTIMLAB_DATA_DIR`` counts as unset.  ``~`` is expanded.
    """
    if data_dir is None:
        env = os.environ.get(ENV_DATA_DIR, "")
        return Path(env).expanduser() if env else cache_home() / "data"
    if isinstance(data_dir, (str, os.PathLike)) and os.fspath(data_dir):
        return Path(data_dir).expanduser()
    raise ValueError(f"invalid data_dir={data_dir!r}: expected a non-empty path (str or os.PathLike) or None")


def fetch(spec: RemoteFile, data_dir: str | os.PathLike[str] | None = None, *, download: bool = True) -> Path:
    """Return the path of ``spec`` in the data directory, verified, downloading it if missing.

    Raises:
        DataMissingError: the file is missing and ``download`` is false or the file has no URL.
        ChecksumError: the file present does not have the published checksum.
        DownloadError: every URL failed (each one's reason is in the message).
    """
    if not isinstance(download, bool):
        raise ValueError(f"invalid download={download!r}: expected True or False")
    path = resolve_data_dir(data_dir) / spec.dataset / spec.name
    if path.exists():
        verify(path, spec)
        return path
    urls = _sources(spec)
    if not download or not urls:
        why = "download=False was given (pass download=True to fetch it)" if urls else "it cannot be downloaded"
        raise DataMissingError(
            f"{spec.dataset}/{spec.name} is not in the data directory and {why}.\n{_by_hand(spec, path)}"
        )
    _download(spec, urls, path)
    return path


def verify(path: Path, spec: RemoteFile) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has ``spec``'s checksum.

    A stamp remembers a successful check.  It holds the file's identity (path, device, inode) and
    its size, mtime and ctime in nanoseconds, and it is used only if all of them are unchanged.
    Writing a file or setting its mtime back always updates its ctime, which no user can set, so
    a changed file is always hashed again.  Stamps are written only for files whose ctime is
    older than the start of the hash by a margin (see ``_RACY_SECONDS``), and only if the file's
    stat did not change while it was hashed.
    """
    before = path.stat()
    stamp_path, identity = _stamp(path, before, spec)
    try:
        if json.loads(stamp_path.read_text()) == identity:
            return
    except (OSError, ValueError):
        pass  # no stamp, or an unreadable one: hash the file
    started_ns = time.time_ns()
    actual = _hash_file(path, spec.algorithm)
    if actual != spec.digest:
        redo = "Delete it so that it is downloaded again, or replace" if _sources(spec) else "Replace"
        raise ChecksumError(
            f"{path} is corrupt or incomplete: its {spec.algorithm} is {actual} but the published "
            f"{spec.algorithm} is {spec.digest} ({before.st_size} bytes on disk).\n"
            f"{redo} it with a good copy. {_by_hand(spec, path)}"
        )
    racy = before.st_ctime_ns > started_ns - int(_RACY_SECONDS * 1e9)
    if racy or _stamp(path, path.stat(), spec)[1] != identity:
        return
    try:
        stamp_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp_path.with_name(f"{stamp_path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps(identity))
        os.replace(tmp, stamp_path)
    except OSError:
        pass  # the stamp only saves time: without it the next load hashes the file again


def _stamp(path: Path, st: os.stat_result, spec: RemoteFile) -> tuple[Path, dict[str, object]]:
    """Where the stamp of ``path`` lives, and what it must contain to vouch for ``st``."""
    real = os.path.realpath(path)
    identity = {
        "path": real,
        "algorithm": spec.algorithm,
        "digest": spec.digest,
        "dev": st.st_dev,
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }
    key = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return cache_home() / "verified" / f"{key}.json", identity


def _hash_file(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _sources(spec: RemoteFile) -> tuple[str, ...]:
    mirror = os.environ.get(ENV_MIRROR, "")
    return (f"{mirror.rstrip('/')}/{spec.dataset}/{spec.name}",) if mirror else spec.urls


def _by_hand(spec: RemoteFile, path: Path) -> str:
    """How a person puts the file in place without this module's help."""
    where = spec.manual or "get it from " + " or ".join(spec.urls)
    return (
        f"To place it by hand: {where}, and save it as {path} "
        f"(its {spec.algorithm} must be {spec.digest}). Choose another data directory with the "
        f"data_dir argument or ${ENV_DATA_DIR}."
    )


def _download(spec: RemoteFile, urls: tuple[str, ...], path: Path) -> None:
    failures = []
    for url in urls:
        try:
            _download_from(url, spec, path)
            return
        except (OSError, http.client.HTTPException, ChecksumError) as e:
            failures.append(f"  {url}: {e}")
    raise DownloadError(
        f"could not download {spec.dataset}/{spec.name}:\n" + "\n".join(failures) + f"\n{_by_hand(spec, path)}"
    )


def _download_from(url: str, spec: RemoteFile, path: Path) -> None:
    """Stream ``url`` into a temporary file beside ``path``; rename it there only if its checksum matches."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # os.open with 0o666 honours the umask (tempfile.mkstemp would make the file private).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise DownloadError(
            f"cannot download {spec.name}: the data directory {path.parent.parent} is not writable ({e}).\n"
            f"{_by_hand(spec, path)}"
        ) from e
    try:
        h = hashlib.new(spec.algorithm)
        request = urllib.request.Request(url, headers={"User-Agent": f"optimlab/{__version__}"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            received = 0
            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=spec.name, file=sys.stderr)
            with bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise OSError(f"the transfer stopped after {received} of {total} bytes")
        actual = h.hexdigest()
        if actual != spec.digest:
            raise ChecksumError(f"the file served has {spec.algorithm} {actual}, not the published {spec.digest}")
        os.replace(tmp, path)
    finally:
        # Reached with the temporary file still there only on failure (including Ctrl-C).
        tmp.unlink(missing_ok=True)
