"""The native path's kernel cache and compiler (optim/_native.py): what it loads, what it builds, how it fails.

Every step here runs in float64 and is compared with the reference path (``fast=False``) within the
float64 bar (1e-9 of the displacement), and every test checks that the native path really ran where
it should, so that none passes by falling back.  Ownership tests need root (CI runs as root).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from optimlab.optim import _codegen, _native
from optimlab.optim.adam import Adam
from optimlab.optim.sgd import SGD

from . import harness as h

SHAPES = [(6, 2), (5,)]
OTHER_UID = 65534  # nobody
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root (CI runs as root)")


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An empty kernel cache under tmp_path (never the user's), a fresh process state, and a private $TMPDIR."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the native path is not used")
    monkeypatch.setenv("OPTIMLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("OPTIMLAB_CC_TIMEOUT", raising=False)
    fresh = {"_kernels": {}, "_compiler": None, "_disabled": None, "_warned": False}
    for name, value in (fresh | {"_fallbacks": set(), "_private": {}}).items():
        monkeypatch.setattr(_native, name, value)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(_native.tempfile, "tempdir", str(tmp))
    yield tmp_path / "cache" / "kernels"


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of tensors of every native launch."""
    calls: list[int] = []
    launch = _native._launch
    monkeypatch.setattr(_native, "_launch", lambda fn, n, *a: calls.append(n) or launch(fn, n, *a))
    return calls


def new_process() -> None:
    """What a new process would know: nothing in memory (the disk cache stays)."""
    _native._kernels.clear()


def train(
    make: Callable[..., Any] = Adam, fast: bool | None = None, schedule: list[dict[str, Any]] | None = None
) -> list[torch.Tensor]:
    """Five float64 steps (or one per entry of ``schedule``, the group's entries at that step) from fixed data."""
    schedule = schedule if schedule is not None else [{}] * 5
    ps = h.make_params(SHAPES, torch.float64)
    opt = make(ps, lr=0.1, fast=fast)
    for entries, grads in zip(schedule, h.gradient_stream(SHAPES, len(schedule), torch.float64)):
        opt.param_groups[0].update(entries)
        for p, g in zip(ps, grads):
            p.grad = g
        opt.step()
    return ps


def assert_reference(
    ps: list[torch.Tensor], make: Callable[..., Any] = Adam, schedule: list[dict[str, Any]] | None = None
) -> None:
    """``ps`` are the reference path's result (float64 bar: 1e-9 of the displacement)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = train(make, False, schedule)
    start = h.make_params(SHAPES, torch.float64)
    for p, e, s in zip(ps, expected, start):
        assert (p - e).abs().max() <= 1e-9 * (e - s).abs().max()


@contextlib.contextmanager
def warned(match: str) -> Iterator[list[str]]:
    """The RuntimeWarnings given inside, all of them, of which at least one must match ``match``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages: list[str] = []
        yield messages
    messages += [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any(re.search(match, m) for m in messages), messages


def kernel_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.so"))


def sidecar_sha(lib: Path) -> str:
    return (lib.parent / f"{lib.name.split('-')[0]}.sha256").read_text().strip()


def compile_library(path: Path, body: str) -> None:
    src = path.with_suffix(".c")
    src.write_text(body)
    subprocess.run([shutil.which("cc") or "gcc", "-shared", "-fPIC", str(src), "-o", str(path)], check=True)
    src.unlink()


def plant(directory: Path, names: list[str], marker: Path) -> None:
    """A library under each of ``names`` (a kernel's files, learnt by running optimlab once): its
    constructor leaves ``marker``, its step does nothing, and its key and sha256 are right."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        key = name.split("-")[0]
        compile_library(
            directory / "planted.so",
            f'#include <stdio.h>\nconst char optimlab_kernel_key[] = "{key}";\n'
            f'__attribute__((constructor)) static void planted(void) {{ fclose(fopen("{marker}", "w")); }}\n'
            "int optimlab_step(long n, void *a, void *b, void *c, void *d, int t) { return 0; }\n",
        )
        sha = hashlib.sha256((directory / "planted.so").read_bytes()).hexdigest()
        (directory / "planted.so").rename(directory / f"{key}-{sha[:16]}.so")
        (directory / f"{key}.sha256").write_text(sha + "\n")


@pytest.fixture
def learnt(cache: Path) -> list[str]:
    """The names of Adam's kernel files, as anyone who ran optimlab once on this machine knows them."""
    train(Adam)
    names = [p.name for p in kernel_files(cache)]
    shutil.rmtree(cache.parent)
    new_process()
    return names


def test_kernels_and_cache_are_private_whatever_the_umask(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = cache.parent.parent / "a" / "b"  # parents that do not exist yet are created private too
    monkeypatch.setenv("OPTIMLAB_CACHE_DIR", str(deep))
    old = os.umask(0)
    try:
        ps = train()
    finally:
        os.umask(old)
    assert_reference(ps)
    kernels = deep / "kernels"
    for d in (deep.parent, deep, kernels):
        assert stat.S_IMODE(d.lstat().st_mode) == 0o700, d
    files = list(kernels.iterdir())
    assert len(kernel_files(kernels)) == 1 and len(files) == 2  # the kernel and its sha256
    for f in files:
        assert stat.S_IMODE(f.lstat().st_mode) in (0o600, 0o700), f
    lib = kernel_files(kernels)[0]
    assert hashlib.sha256(lib.read_bytes()).hexdigest() == sidecar_sha(lib)


def test_a_world_writable_cache_is_not_used(
    cache: Path, learnt: list[str], tmp_path: Path, launched: list[int]
) -> None:
    marker = tmp_path / "planted-code-ran"
    plant(cache, learnt, marker)
    for d in (cache.parent, cache):
        d.chmod(0o777)
    with warned("can be written by other users") as caught:
        ps = train()
        train()
    assert len([m for m in caught if "kernel cache" in m]) == 1  # one warning per process
    assert not marker.exists() and launched
    assert_reference(ps)
    fallback = _native._private[cache]
    assert fallback.parent == Path(_native.tempfile.tempdir) and kernel_files(fallback)
    assert stat.S_IMODE(fallback.stat().st_mode) == 0o700


@root_only
def test_a_cache_owned_by_another_user_is_not_used(
    cache: Path, learnt: list[str], tmp_path: Path, launched: list[int]
) -> None:
    marker = tmp_path / "planted-code-ran"
    plant(cache, learnt, marker)
    for path in (cache.parent, cache, *cache.iterdir()):
        os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.warns(RuntimeWarning, match=f"owned by another user \\(uid {OTHER_UID}\\)"):
        ps = train()
    assert not marker.exists() and launched
    assert_reference(ps)


@root_only
def test_a_kernel_file_owned_by_another_user_is_rebuilt(
    cache: Path, learnt: list[str], tmp_path: Path, launched: list[int]
) -> None:
    train()  # the cache directories are this user's and private
    new_process()
    marker = tmp_path / "planted-code-ran"
    for f in cache.iterdir():
        f.unlink()
    plant(cache, learnt, marker)
    for f in cache.iterdir():
        os.chown(f, OTHER_UID, OTHER_UID)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cache itself is fine: the kernel is just rebuilt
        ps = train()
    assert not marker.exists() and launched
    assert_reference(ps)
    (lib,) = [f for f in kernel_files(cache) if f.stat().st_uid == os.geteuid()]
    assert (cache / f"{lib.name.split('-')[0]}.sha256").stat().st_uid == os.geteuid()


def test_a_kernel_writable_by_others_is_rebuilt(
    cache: Path, learnt: list[str], tmp_path: Path, launched: list[int]
) -> None:
    train()
    new_process()
    for f in cache.iterdir():
        f.unlink()
    marker = tmp_path / "planted-code-ran"
    plant(cache, learnt, marker)
    for f in cache.iterdir():
        f.chmod(0o666)
    ps = train()
    assert not marker.exists() and launched
    assert_reference(ps)


def test_the_old_predictable_temporary_name_is_not_used(
    cache: Path, learnt: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launched: list[int]
) -> None:
    # where ~/.cache cannot be written, kernels went to $TMPDIR/optimlab-kernels-$USER: anyone could create it first
    marker = tmp_path / "planted-code-ran"
    tmp = Path(_native.tempfile.tempdir)
    predictable = {tmp / f"optimlab-kernels-{user}" for user in (os.environ.get("USER", ""), "root", os.geteuid())}
    for directory in predictable:
        plant(directory, learnt, marker)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("OPTIMLAB_CACHE_DIR", str(blocker))  # its kernels/ cannot be created
    with pytest.warns(RuntimeWarning, match="cannot be written"):
        ps = train()
    assert not marker.exists() and launched
    assert_reference(ps)
    fallback = _native._private[blocker / "kernels"]
    assert fallback.parent == tmp and fallback not in predictable
    assert kernel_files(fallback)


def test_a_truncated_kernel_is_rebuilt(cache: Path, launched: list[int]) -> None:
    train()
    (lib,) = kernel_files(cache)
    content = lib.read_bytes()
    partial = cache / "partial"
    partial.write_bytes(content[: len(content) // 2])
    partial.chmod(0o700)
    os.replace(partial, lib)  # a new file: the one this process has loaded stays as it was
    new_process()
    ps = train()
    assert launched
    assert_reference(ps)
    assert [p.name for p in kernel_files(cache)] == [lib.name] and lib.read_bytes() == content


@pytest.mark.parametrize("with_its_sha256", [False, True])
def test_another_optimizers_kernel_under_the_requested_name_is_rebuilt(
    cache: Path, launched: list[int], with_its_sha256: bool
) -> None:
    train(SGD)
    (sgd,) = kernel_files(cache)
    train(Adam)
    (adam,) = set(kernel_files(cache)) - {sgd}
    adam_content, adam_key = adam.read_bytes(), adam.name.split("-")[0]
    if with_its_sha256:  # the content matches the recorded sha256: the key compiled in tells them apart
        shutil.copy(sgd, cache / f"{adam_key}-{sgd.name.split('-')[1]}")
        shutil.copy(cache / f"{sgd.name.split('-')[0]}.sha256", cache / f"{adam_key}.sha256")
        adam.unlink()
    else:
        shutil.copy(sgd, cache / "copy")
        os.replace(cache / "copy", adam)
    new_process()
    launched.clear()
    ps = train(Adam)
    assert launched
    assert_reference(ps, Adam)
    assert sorted(kernel_files(cache)) == sorted([sgd, adam]) and adam.read_bytes() == adam_content


def ours_in_tmp() -> list[Path]:
    """What optimlab left in $TMPDIR (torch leaves its own things there)."""
    return [p for p in Path(_native.tempfile.tempdir).iterdir() if p.name.startswith("optimlab")]


def fake_compiler(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "cc"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return state == "Z"  # killed, waiting to be reaped by init


def test_a_hanging_compiler_is_stopped_and_leaves_nothing(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launched: list[int]
) -> None:
    # answers --version, then hangs on every compilation, in a child (the whole process group must go)
    pids = tmp_path / "pids"
    cc = fake_compiler(
        tmp_path, f'case "$*" in *--version*) echo fake cc 1.0; exit 0;; esac\nsleep 600 &\necho $! >> {pids}\nwait\n'
    )
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("OPTIMLAB_CC_TIMEOUT", "1")
    start = time.monotonic()
    with warned("did not finish in 1 s") as caught:
        ps = train()
        train(SGD)
    assert time.monotonic() - start < 30  # the sleeping child did not hold the pipes open
    assert len(caught) == 1 and not launched and not _native.available()
    assert_reference(ps)
    assert all(gone(int(pid)) for pid in (pids.read_text().split() if pids.exists() else []))
    assert not ours_in_tmp() and not list(cache.iterdir())


@pytest.mark.parametrize(
    ("failure", "message", "timeout"),
    [
        pytest.param("echo 'cc: internal compiler error' >&2; exit 4", "internal compiler error", "120", id="fails"),
        # waits for the timeout, long enough for the other kernels to build on a busy machine
        pytest.param("sleep 600", "did not finish in 10 s", "10", id="hangs", marks=pytest.mark.slow),
    ],
)
def test_a_kernel_that_cannot_be_built_takes_the_reference_path_alone(
    cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    launched: list[int],
    failure: str,
    message: str,
    timeout: str,
) -> None:
    real = shutil.which("cc") or shutil.which("gcc")
    cc = fake_compiler(
        tmp_path,
        # Adam's kernel (the one with a sqrt) fails; the probe and every other kernel are compiled
        'for a in "$@"; do case "$a" in *.c) if grep -q optimlab_kernel_key "$a" && grep -q sqrt "$a"; then '
        f"{failure}; fi;; esac; done\n"
        f'exec {real} "$@"\n',
    )
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("OPTIMLAB_CC_TIMEOUT", timeout)
    with warned(f"kernel of adam .* could not be built.*{message}") as caught:
        ps = train(Adam)
        train(Adam)
    assert len(caught) == 1 and not launched
    assert_reference(ps, Adam)
    sgd = train(SGD)  # the native path stays on for every other configuration
    assert launched and _native.available()
    assert_reference(sgd, SGD)
    assert [p.name for p in cache.iterdir() if p.is_dir()] == []


def test_a_compiler_with_arguments_works(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launched: list[int]
) -> None:
    # as CC="ccache gcc": a wrapper, then the compiler it runs
    calls = tmp_path / "calls"
    wrapper = fake_compiler(tmp_path, f'echo "$@" >> {calls}\nexec "$@"\n')
    real = shutil.which("cc") or shutil.which("gcc")
    monkeypatch.setenv("CC", f"{wrapper} {real}")
    ps = train()
    assert launched and kernel_files(cache)
    assert_reference(ps)
    assert all(line.startswith(real) for line in calls.read_text().splitlines())


@pytest.mark.parametrize(
    ("cc", "message"),
    [
        ("/nonexistent/cc", "no C compiler found .*CC="),
        ("no-such-compiler-x7 -O2", "no C compiler found .*CC="),
        ('gcc "-O2', "CC=.* cannot be read as a command line"),
    ],
)
def test_a_missing_compiler_named_by_cc_warns_once(
    cache: Path, monkeypatch: pytest.MonkeyPatch, cc: str, message: str
) -> None:
    monkeypatch.setenv("CC", cc)
    with warned(message) as caught:
        ps = train(fast=None)
        train(SGD, fast=None)
    assert len(caught) == 1
    assert_reference(ps)


def test_a_broken_compiler_warns_once_for_every_configuration(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cc = fake_compiler(
        tmp_path, 'case "$*" in *--version*) echo 1.0; exit 0;; esac\necho "cc: internal error" >&2\nexit 4\n'
    )
    monkeypatch.setenv("CC", str(cc))
    with warned(f"{re.escape(str(cc))} cannot build a kernel .*internal error") as caught:
        ps = train(Adam)
        train(SGD)
    assert len(caught) == 1 and not _native.available()
    assert_reference(ps)
    assert not ours_in_tmp()


def test_an_invalid_compiler_timeout_is_refused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIMLAB_CC_TIMEOUT", "soon")
    ps = h.make_params(SHAPES, torch.float64)
    before = [p.clone() for p in ps]
    for p in ps:
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="OPTIMLAB_CC_TIMEOUT='soon'.*positive number of seconds"):
        Adam(ps).step()
    assert all(torch.equal(p, b) for p, b in zip(ps, before))  # nothing half done


@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param(lambda x: np.float32(x), id="numpy.float32"),
        pytest.param(lambda x: np.float64(x), id="numpy.float64"),
        pytest.param(lambda x: torch.tensor(x, dtype=torch.float64), id="fresh-0-dim-tensor"),
        pytest.param(lambda x: x, id="python-float"),
    ],
)
def test_learning_rates_of_any_numeric_type_build_one_kernel(
    cache: Path, monkeypatch: pytest.MonkeyPatch, launched: list[int], schedule: Callable[[float], Any]
) -> None:
    traced: list[int] = []
    generate = _codegen.generate
    monkeypatch.setattr(_codegen, "generate", lambda *a, **k: traced.append(1) or generate(*a, **k))
    lrs = [schedule(0.1 * 0.9**i) for i in range(20)]
    ps = train(schedule=[{"lr": lr} for lr in lrs])
    assert len(traced) == 1 and len(kernel_files(cache)) == 1 and len(launched) == 20
    # a float32 number is taken at its value (0.009999999776... for 0.01), in double like a Python float
    assert_reference(ps, schedule=[{"lr": float(lr)} for lr in lrs])


def test_zeros_of_any_numeric_type_build_no_kernel_per_step(
    cache: Path, monkeypatch: pytest.MonkeyPatch, launched: list[int]
) -> None:
    traced: list[int] = []
    generate = _codegen.generate
    monkeypatch.setattr(_codegen, "generate", lambda *a, **k: traced.append(1) or generate(*a, **k))
    zeros = [torch.tensor(0.0), np.float32(0.0), 0.0, torch.tensor(0.0, dtype=torch.float64), np.float64(0.0)]
    schedule = [{"weight_decay": wd} for wd in zeros + [torch.tensor(0.1), np.float32(0.2), 0.3] + zeros]
    ps = train(schedule=schedule)
    # at most one kernel for the rules' "skip this term" (a Python 0) and one for a number
    assert len(traced) <= 2 and len(launched) == len(schedule)
    assert_reference(ps, schedule=schedule)
