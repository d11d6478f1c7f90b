"""Locating, verifying and downloading data files (optimlab.data._files), on synthetic files."""

from __future__ import annotations

import hashlib
import http.server
import os
from pathlib import Path

import pytest

from optimlab.data import _files
from optimlab.data._files import (
    ChecksumError,
    DataMissingError,
    DownloadError,
    RemoteFile,
    fetch,
    resolve_data_dir,
    verify,
)

from .conftest import serve

CONTENT = b"optimlab test payload\n" * 1000
UNREACHABLE = "http://127.0.0.1:9/toy/toy.bin"  # port 9 (discard): nothing listens, so it is refused at once


def toy(*urls: str, content: bytes = CONTENT, manual: str = "") -> RemoteFile:
    return RemoteFile("toy", "toy.bin", urls, "sha256", hashlib.sha256(content).hexdigest(), manual)


def place(data_dir: Path, content: bytes = CONTENT) -> Path:
    path = data_dir / "toy" / "toy.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = _files._hash_file

    def counting(path: Path, algorithm: str) -> str:
        calls.append(path)
        return real(path, algorithm)

    monkeypatch.setattr(_files, "_hash_file", counting)
    return calls


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# --- the data directory -------------------------------------------------------------------------


def test_data_dir_argument_then_environment_then_xdg_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "optimlab" / "data"
    monkeypatch.setenv("OPTIMLAB_DATA_DIR", "")  # empty counts as unset
    assert resolve_data_dir() == tmp_path / "xdg" / "optimlab" / "data"
    monkeypatch.setenv("OPTIMLAB_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_relative_or_unset_xdg_cache_home_means_home_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec says to ignore it
    assert resolve_data_dir() == tmp_path / ".cache" / "optimlab" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir() == tmp_path / ".cache" / "optimlab" / "data"


@pytest.mark.parametrize("bad", ["", 3, b"/tmp"])
def test_invalid_data_dir_is_a_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match=r"invalid data_dir=.*expected a non-empty path"):
        resolve_data_dir(bad)  # type: ignore[arg-type]


def test_invalid_download_flag_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"invalid download='no': expected True or False"):
        fetch(toy(), tmp_path, download="no")  # type: ignore[arg-type]


# --- verification -------------------------------------------------------------------------------


def test_present_file_is_returned_after_verification(tmp_path: Path) -> None:
    path = place(tmp_path)
    assert fetch(toy(UNREACHABLE), tmp_path) == path


def test_corrupt_file_names_file_both_checksums_and_remedy(tmp_path: Path) -> None:
    path = place(tmp_path, CONTENT[:-7])  # truncated
    with pytest.raises(ChecksumError) as err:
        fetch(toy(UNREACHABLE), tmp_path)
    message = str(err.value)
    assert str(path) in message
    assert hashlib.sha256(CONTENT).hexdigest() in message
    assert hashlib.sha256(CONTENT[:-7]).hexdigest() in message
    assert f"{len(CONTENT) - 7} bytes" in message
    assert "Delete it" in message and UNREACHABLE in message
    assert path.read_bytes() == CONTENT[:-7]  # a user's file is reported, never deleted


def test_stamp_spares_the_second_hash_but_not_after_a_change(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_files, "_RACY_SECONDS", 0.0)  # the file was just written; accept a stamp at once
    hashes = count_hashes(monkeypatch)
    path = place(tmp_path)
    verify(path, toy())
    verify(path, toy())
    assert len(hashes) == 1
    # Same size, mtime set back: only the ctime (which no user can set) betrays the change.
    st = path.stat()
    path.write_bytes(CONTENT.replace(b"payload", b"PAYLOAD", 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(ChecksumError):
        verify(path, toy())
    assert len(hashes) == 2


def test_stamp_is_per_checksum(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_files, "_RACY_SECONDS", 0.0)
    path = place(tmp_path)
    verify(path, toy())
    with pytest.raises(ChecksumError):  # a stamp for one digest never vouches for another
        verify(path, toy(content=b"other"))


def test_recently_changed_file_gets_no_stamp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hashes = count_hashes(monkeypatch)
    path = place(tmp_path)  # ctime = now: within _RACY_SECONDS
    verify(path, toy())
    verify(path, toy())
    assert len(hashes) == 2


def test_unwritable_cache_only_costs_a_hash(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_files, "_RACY_SECONDS", 0.0)
    (tmp_path / "not-a-dir").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-dir"))
    hashes = count_hashes(monkeypatch)
    path = place(tmp_path / "data")
    verify(path, toy())
    verify(path, toy())
    assert len(hashes) == 2


# --- missing files ------------------------------------------------------------------------------


def test_missing_file_with_download_false(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as err:
        fetch(toy(UNREACHABLE), tmp_path / "data", download=False)
    message = str(err.value)
    assert "download=False" in message and UNREACHABLE in message
    assert str(tmp_path / "data" / "toy" / "toy.bin") in message
    assert isinstance(err.value, FileNotFoundError)
    assert not (tmp_path / "data").exists()  # nothing written


def test_file_without_url_says_where_to_get_it(tmp_path: Path) -> None:
    spec = toy(manual="ask the data desk for toy.bin")
    with pytest.raises(DataMissingError, match="and it cannot be downloaded") as err:
        fetch(spec, tmp_path)
    assert "ask the data desk for toy.bin" in str(err.value)
    assert str(tmp_path / "toy" / "toy.bin") in str(err.value)
    assert spec.digest in str(err.value)


# --- downloads ----------------------------------------------------------------------------------


def test_download_over_http(http_root: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    served, url = http_root
    place(served)
    data = tmp_path / "data"
    path = fetch(toy(f"{url}/toy/toy.bin"), data)
    assert path == data / "toy" / "toy.bin" and path.read_bytes() == CONTENT
    assert listing(data) == ["toy", "toy/toy.bin"]  # no temporary file left
    err = capsys.readouterr().err
    assert "toy.bin" in err and "100%" in err  # the progress bar, on stderr


def test_download_tries_the_next_url(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, url = http_root
    place(served)
    path = fetch(toy(UNREACHABLE, f"{url}/missing", f"{url}/toy/toy.bin"), tmp_path)
    assert path.read_bytes() == CONTENT


def test_every_url_failing_names_each_url_and_the_manual_way(http_root: tuple[Path, str], tmp_path: Path) -> None:
    _, url = http_root
    spec = toy(UNREACHABLE, f"{url}/toy/toy.bin")
    with pytest.raises(DownloadError) as err:
        fetch(spec, tmp_path / "data")
    message = str(err.value)
    assert f"{UNREACHABLE}: <urlopen error" in message
    assert f"{url}/toy/toy.bin: HTTP Error 404" in message
    assert "To place it by hand" in message and str(tmp_path / "data" / "toy" / "toy.bin") in message
    assert listing(tmp_path / "data") == ["toy"]


def test_download_with_wrong_checksum_leaves_nothing(http_root: tuple[Path, str], tmp_path: Path) -> None:
    served, url = http_root
    place(served, b"something else")
    spec = toy(f"{url}/toy/toy.bin")
    with pytest.raises(DownloadError) as err:
        fetch(spec, tmp_path / "data")
    served_digest = hashlib.sha256(b"something else").hexdigest()
    assert f"has sha256 {served_digest}, not the published {spec.digest}" in str(err.value)
    assert listing(tmp_path / "data") == ["toy"]


class _Truncating(http.server.BaseHTTPRequestHandler):
    """Promises the whole payload, sends half of it, and hangs up."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(CONTENT)))
        self.end_headers()
        self.wfile.write(CONTENT[: len(CONTENT) // 2])
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_interrupted_transfer_leaves_nothing(tmp_path: Path) -> None:
    with serve(_Truncating) as url, pytest.raises(DownloadError, match=r"IncompleteRead|stopped after"):
        fetch(toy(f"{url}/toy/toy.bin"), tmp_path)
    assert listing(tmp_path) == ["toy"]


def test_unwritable_data_directory_is_reported(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")  # a data directory under a regular file cannot be created
    with pytest.raises(DownloadError, match=r"data directory .*/file/data is not writable") as err:
        fetch(toy(UNREACHABLE), tmp_path / "file" / "data")
    assert "To place it by hand" in str(err.value)


def test_mirror_variable_replaces_the_canonical_urls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    place(mirror)
    monkeypatch.setenv("OPTIMLAB_DATA_MIRROR", mirror.as_uri() + "/")
    path = fetch(toy(UNREACHABLE), tmp_path / "data")
    assert path.read_bytes() == CONTENT
    monkeypatch.setenv("OPTIMLAB_DATA_MIRROR", (tmp_path / "empty").as_uri())
    with pytest.raises(DownloadError) as err:
        fetch(toy(UNREACHABLE), tmp_path / "other")
    assert (tmp_path / "empty").as_uri() + "/toy/toy.bin" in str(err.value)
    assert f"{UNREACHABLE}:" not in str(err.value)  # the mirror was the only source tried
