"""Shared fixtures: an isolated cache and environment, the staged real data, a local HTTP server."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from optimlab.data import _files

# Read before any fixture clears the variable: where the real data sets are staged.
STAGED = Path(os.environ.get(_files.ENV_DATA_DIR) or Path(__file__).resolve().parents[3] / "shared" / "data")


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Verification stamps go to a temporary cache, never the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_files.ENV_DATA_DIR, raising=False)
    monkeypatch.delenv(_files.ENV_MIRROR, raising=False)
    monkeypatch.setattr(_files, "TIMEOUT", 5.0)  # a test must fail, not hang, if a server stalls


@pytest.fixture(scope="session")
def staged() -> Path:
    """The staged real data (``$OPTIMLAB_DATA_DIR``, else the repository's ``../shared/data``)."""
    if not (STAGED / "mnist").is_dir():
        pytest.skip(f"real data not staged at {STAGED} (set {_files.ENV_DATA_DIR} to a directory holding mnist/ etc.)")
    return STAGED


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    timeout = 5  # seconds a connection may idle: a stuck client cannot hold the test

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run an HTTP server on 127.0.0.1 in a thread; yields its base URL; stops it on exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve_directory(directory: Path) -> contextlib.AbstractContextManager[str]:
    """Serve the files under ``directory`` (see :func:`serve`)."""
    return serve(functools.partial(QuietHandler, directory=str(directory)))


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An empty directory served over HTTP: ``(directory, base URL)``."""
    root = tmp_path / "served"
    root.mkdir()
    with serve_directory(root) as url:
        yield root, url
