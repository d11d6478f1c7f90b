"""The native fast path: each optimizer's rule as one compiled C loop over all of a group's tensors.

An optimizer step is memory traffic.  The reference paths run the rule one tensor operation at a
time, so every intermediate makes a round trip through memory; here the rule, translated by
:mod:`~optimlab.optim._codegen`, reads each parameter, gradient and state element once and writes
the parameter and state once, on every thread (OpenMP), for all the tensors of a group in one call.
Hyperparameters and the step count are arguments of the call, whatever their numeric type (Python
or NumPy numbers, 0-dim tensors): a scheduler never recompiles.

When it is used (``fast`` is a constructor option and a param-group entry):

* ``fast=None`` (the default) or ``True``: for float32/float64 CPU tensors, when a C compiler is
  found.  Without one, ``None`` quietly keeps the reference path and ``True`` warns once; a
  compiler that is named by ``$CC`` but missing, or that does not work, warns once either way.
* ``fast=False``: never; the reference path.

Other tensors (CUDA, 16-bit, memory layouts other than contiguous or channels_last, state of
another layout) take the reference path.
Rules that reduce over a tensor (Adafactor) get a loop-nest kernel (:mod:`~optimlab.optim._loopnest`)
that updates one tensor after another.

The first step of each configuration (rule, options, which hyperparameters are 0, dtype, state
layout) traces the rule (tens of ms) and compiles it with ``$CC`` (which may hold arguments:
``CC="ccache gcc"``) or the first of ``cc``, ``gcc``, ``clang`` on the ``PATH`` (a fraction of a
second; a compilation is stopped after ``$OPTIMLAB_CC_TIMEOUT`` seconds, default 120).  If one
kernel fails to build, that configuration takes the reference path, with a warning.

Kernels are cached on disk, keyed by their source, the compiler, the flags and the machine, under
``$OPTIMLAB_CACHE_DIR/kernels`` (default ``~/.cache/optimlab/kernels``), so later processes only
trace.  The cache is code this process will run, so it must be private: the cache directory and
``kernels/`` are created 0700 whatever the umask, and used only if they are real directories owned
by this user that neither group nor others can write; otherwise (or where they cannot be written)
kernels go to a private temporary directory for this process, with a warning.  A kernel is loaded
only if its file is owned by this user, not writable by others, and has the sha256 recorded beside
it when it was built; once loaded, the key compiled into it must be the one asked for.  A kernel
that fails a check is rebuilt.

Results equal the reference path's bit for bit wherever torch rounds as IEEE 754 says; torch's
vectorised CPU ``sqrt`` is not correctly rounded (one unit in the last place off on ~0.6% to ~20% of
float32 results, depending on the CPU) and C's is, which is the only difference the tests find.
"""

from __future__ import annotations

import array
import atexit
import ctypes
import functools
import hashlib
import math
import numbers
import os
import platform
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import warnings
from collections import defaultdict
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from . import _codegen, _loopnest, _math

if TYPE_CHECKING:
    from ._base import RuleOptimizer, State

_DTYPES = (torch.float32, torch.float64)
# ISO C (no GNU extensions) keeps a*b + c as two roundings: no FMA contraction.  Neither
# -fno-math-errno nor -fno-trapping-math changes a result; they let sqrt and selects vectorise.
_FLAGS = ["-std=c11", "-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared"]
# tried in this order on a small program once per process: -march=native and OpenMP where the
# compiler has them, plain C11 otherwise
_EXTRA = (["-march=native", "-fopenmp"], ["-fopenmp"], [])
#: seconds a compiler may run (``$OPTIMLAB_CC_TIMEOUT``)
TIMEOUT = 120.0
#: part of every kernel's key: a change in how kernels are stored or checked invalidates old ones
_FORMAT = "2: key symbol, sha256 sidecar"
_KEY_SYMBOL = "optimlab_kernel_key"

_lock = threading.Lock()
_disabled: str | None = None  # why the native path is off in this process
_warned = False


class _Compiler(NamedTuple):
    argv: tuple[str, ...]  # $CC split as a shell would, the program resolved on the PATH
    identity: str  # its --version
    timeout: float
    extra: tuple[str, ...] | None = None  # the flags of _EXTRA it takes, once a kernel had to be built


_compiler: _Compiler | None = None
_kernels: dict[Hashable, Any] = {}  # configuration -> (Kernel, C function), or None: reference path
_fallbacks: set[Path] = set()  # caches not used (warned about once each)
_private: dict[Path, Path] = {}  # such a cache -> the private temporary directory used instead


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$OPTIMLAB_CACHE_DIR/kernels`` or ``~/.cache/optimlab/kernels``."""
    root = (
        os.environ.get("OPTIMLAB_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "optimlab"
    )
    return Path(root) / "kernels"


def available() -> bool:
    """Whether a working C compiler was found."""
    return _find_compiler() is not None


def wanted(opt: RuleOptimizer, group: dict[str, Any]) -> bool:
    """Whether ``group`` takes the native path (see the module docstring)."""
    fast = group.get("fast")
    if fast is False:
        return False
    if not available():
        if fast:
            _warn()
        return False
    return True


def _find_compiler() -> _Compiler | None:
    global _compiler
    if _disabled is not None:
        return None
    if _compiler is None:
        timeout = _timeout()
        cc = os.environ.get("CC", "").strip()
        try:
            candidates = [shlex.split(cc)] if cc else [["cc"], ["gcc"], ["clang"]]
        except ValueError as exc:  # unbalanced quotes
            _disable(f"CC={cc!r} cannot be read as a command line ({exc})", loud=True)
            return None
        found = next(([path, *argv[1:]] for argv in candidates if (path := shutil.which(argv[0]))), None)
        if found is None:
            tried = f"CC={cc!r}" if cc else "cc, gcc, clang"
            _disable(f"no C compiler found (tried {tried}; set CC to one)", loud=bool(cc))
            return None
        try:
            done = _execute([*found, "--version"], timeout)
        except (OSError, subprocess.SubprocessError) as exc:
            done = subprocess.CompletedProcess(found, -1, "", str(exc))
        if done.returncode != 0:
            why = done.stderr.strip()[-500:] or f"exit status {done.returncode}"
            _disable(f"the C compiler {shlex.join(found)} does not run ({why})", loud=True)
            return None
        _compiler = _Compiler(tuple(found), done.stdout, timeout)
    return _compiler


def _timeout() -> float:
    text = os.environ.get("OPTIMLAB_CC_TIMEOUT", "").strip()
    if not text:
        return TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError(
            f"optimlab: OPTIMLAB_CC_TIMEOUT={text!r} is not allowed: it must be a positive number of seconds "
            f"(the time a C compiler may run; default {TIMEOUT:g})"
        )
    return value


def _disable(reason: str, loud: bool = False) -> None:
    """Turn the native path off for this process; ``loud``: say so now, whatever ``fast`` is."""
    global _disabled
    _disabled = reason
    if loud:
        _warn()


def _warn() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"optimlab: native optimizer steps are off, the reference path is used: {_disabled}",
            RuntimeWarning,
            stacklevel=5,
        )


def _execute(argv: list[str], timeout: float, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a compiler; past ``timeout`` seconds it and every process it started are killed."""
    env = dict(os.environ)
    if cwd is not None:
        env["TMPDIR"] = cwd  # the compiler's own temporaries go where they are removed with ours
    # a session of its own: the whole process group can be killed (cc runs cc1, as, ld; ccache runs cc)
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",  # a compiler's messages in another encoding than the locale's
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise subprocess.SubprocessError(
            f"{argv[0]} did not finish in {timeout:g} s and was stopped (OPTIMLAB_CC_TIMEOUT sets the limit)"
        ) from None
    except BaseException:  # KeyboardInterrupt: leave no compiler behind
        _kill(proc)
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _kill(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


@functools.cache
def _machine() -> str:
    # -march=native code runs only where the same instructions exist
    try:
        with open("/proc/cpuinfo") as f:
            return "".join(line for line in f if line.startswith(("model name", "flags")))[:100_000]
    except OSError:
        return platform.processor() + platform.machine()


# -- the kernel cache -------------------------------------------------------------------------------


class _Rejected(Exception):
    """A cached kernel failed a check: it is not loaded, and is built again."""


def _compiled(source: str) -> Any:
    """The C function of ``source``: from the disk cache if a kernel there passes every check, else built."""
    cc = _find_compiler()
    if cc is None:  # the compiler was found not to work, in this call or before
        return None
    key = hashlib.sha256(
        "\0".join([source, shlex.join(cc.argv), cc.identity, " ".join(_FLAGS), _machine(), _FORMAT]).encode()
    ).hexdigest()[:32]
    source += f'\n/* what optimlab checks after loading this kernel */\nconst char {_KEY_SYMBOL}[] = "{key}";\n'
    directory = _cache()
    try:
        return _load(directory, key)
    except _Rejected:
        pass
    extra = _flags()
    if extra is None:
        return None
    _build(directory, key, source, extra)
    return _load(directory, key)


def _cache() -> Path:
    """The kernel directory this process may use: the configured one if it is private, else its own."""
    directory = cache_dir()
    try:
        problem = _make_private(directory)
    except OSError as exc:
        problem = f"cannot be written ({exc.strerror or exc})"
    if problem is None and not os.access(directory, os.W_OK | os.X_OK):
        problem = "cannot be written"
    if problem is None:
        return directory
    if directory not in _private:
        fallback = Path(tempfile.mkdtemp(prefix="optimlab-kernels-"))  # 0700, a name no one can predict
        atexit.register(shutil.rmtree, fallback, ignore_errors=True)
        _private[directory] = fallback
    if directory not in _fallbacks:
        _fallbacks.add(directory)
        warnings.warn(
            f"optimlab: the kernel cache {directory} {problem}: it is not used, and this process keeps its kernels "
            f"in the private temporary directory {_private[directory]} (make the cache a directory of yours that "
            "only you can write, e.g. chmod 700, or set OPTIMLAB_CACHE_DIR to one)",
            RuntimeWarning,
            stacklevel=7,
        )
    return _private[directory]


def _make_private(directory: Path) -> str | None:
    """Create ``directory`` (the cache root and ``kernels/``) 0700 where missing; what is wrong with it, or None.

    Only the cache root and what is below it are checked: the root is resolved once (a user's
    ``~/.cache`` may be a link), then nothing below it may be a link or writable by another user.
    """
    root = Path(os.path.realpath(directory.parent))
    missing = [p for p in (*reversed(root.parents), root) if not os.path.lexists(p)]
    for path in [*missing, root / directory.name]:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)  # mkdir's mode goes through the umask, which may take the owner's bits too
    problem = _not_private(os.lstat(root), directory=True)
    if problem is not None:
        return f"is in {root}, which {problem}"
    return _not_private(os.lstat(root / directory.name), directory=True)


def _not_private(st: os.stat_result, directory: bool) -> str | None:
    """Why a file or directory with status ``st`` may not hold code this process runs, or None."""
    kind = "directory" if directory else "regular file"
    if not (stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)):
        return "is a symbolic link" if stat.S_ISLNK(st.st_mode) else f"is not a {kind}"
    if st.st_uid != os.geteuid():
        return f"is owned by another user (uid {st.st_uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"can be written by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _read_private(path: Path) -> bytes:
    """The content of ``path``, a regular file of this user's that no one else can write (else _Rejected)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _Rejected(f"{path}: {exc.strerror or exc}") from None
    try:
        problem = _not_private(os.fstat(fd), directory=False)
        if problem is not None:
            raise _Rejected(f"{path} {problem}")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)


def _load(directory: Path, key: str) -> Any:
    """The C function of the kernel ``key`` in ``directory`` (_Rejected where a check fails)."""
    recorded = _read_private(directory / f"{key}.sha256").decode("ascii", "replace").strip()
    if len(recorded) != 64 or not all(c in "0123456789abcdef" for c in recorded):
        raise _Rejected(f"{key}.sha256 holds no sha256")
    # the name holds the content's hash: dlopen returns a library already loaded under the same
    # name, so a kernel rebuilt in this process must have a name of its own
    lib = directory / f"{key}-{recorded[:16]}.so"
    if hashlib.sha256(_read_private(lib)).hexdigest() != recorded:
        _discard(lib)
        raise _Rejected(f"{lib} is not the kernel that was built")
    # Between the check and dlopen only this user can change the file: the directory is theirs
    # and no one else can write it (checked by _cache).
    handle = ctypes.CDLL(str(lib))
    expected = key.encode() + b"\0"
    try:
        embedded = (ctypes.c_char * len(expected)).in_dll(handle, _KEY_SYMBOL).raw
    except ValueError:
        embedded = b""
    if embedded != expected:
        _discard(lib)
        raise _Rejected(f"{lib} is the kernel of another configuration")
    fn = handle.optimlab_step
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    return fn


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _build(directory: Path, key: str, source: str, extra: tuple[str, ...]) -> None:
    """Compile ``source`` into ``directory`` as the kernel ``key``: its file and its sha256 appear whole or not at all."""
    cc = _compiler
    assert cc is not None
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
        work = Path(tmp)
        (work / "kernel.c").write_text(source)
        done = _execute([*cc.argv, *_FLAGS, *extra, "kernel.c", "-o", "kernel.so", "-lm"], cc.timeout, cwd=tmp)
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(cc.argv)} failed: {done.stderr.strip()[-2000:]}")
        sha = _seal(work / "kernel.so", 0o700)
        (work / "sha256").write_text(sha + "\n")
        _seal(work / "sha256", 0o600)
        # the kernel first: a recorded sha256 never names a file that is not there yet
        os.replace(work / "kernel.so", directory / f"{key}-{sha[:16]}.so")
        os.replace(work / "sha256", directory / f"{key}.sha256")
    _fsync(directory)


def _seal(path: Path, mode: int) -> str:
    """Give ``path`` its final mode, flush it to disk, and return its sha256."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, mode)
        os.fsync(fd)
        with os.fdopen(os.dup(fd), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    finally:
        os.close(fd)


def _fsync(directory: Path) -> None:
    """Make the new names in ``directory`` durable, where its file system can (some refuse a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _flags() -> tuple[str, ...] | None:
    """The flags of ``_EXTRA`` the compiler takes (tried once per compiler), or None: it builds nothing."""
    global _compiler
    cc = _compiler
    assert cc is not None
    if cc.extra is None:
        errors = ""
        with tempfile.TemporaryDirectory(prefix="optimlab-cc-") as tmp:
            (Path(tmp) / "probe.c").write_text(_codegen.PROBE)
            for extra in _EXTRA:
                try:
                    done = _execute([*cc.argv, *_FLAGS, *extra, "probe.c", "-o", "probe.so", "-lm"], cc.timeout, tmp)
                except (OSError, subprocess.SubprocessError) as exc:
                    errors = str(exc)
                    break  # a compiler that hangs once would hang again
                if done.returncode == 0:
                    _compiler = cc = cc._replace(extra=tuple(extra))
                    break
                errors = done.stderr.strip()[-1000:] or f"exit status {done.returncode}"
        if cc.extra is None:
            _disable(f"the C compiler {shlex.join(cc.argv)} cannot build a kernel ({errors})", loud=True)
    return cc.extra


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """Rule keyword arguments -> (constants the kernel specialises on, run-time numbers).

    Every number is a run-time argument: Python and NumPy numbers and one-element tensors alike
    (bools are options, not numbers).  The one exception is a Python number equal to 0, which
    rules skip the term of (``_math.is_zero``), exactly as the reference path does: crossing 0
    builds one more kernel, once.
    """
    static, hyper = {}, {}
    for k, v in kwargs.items():
        if _math.is_zero(v) and not isinstance(v, bool):
            static[k] = v
        elif isinstance(v, numbers.Real) and not isinstance(v, bool):
            hyper[k] = float(v)
        elif isinstance(v, Tensor) and v.numel() == 1 and v.dtype != torch.bool and not v.is_complex():
            hyper[k] = float(v.item())
        else:
            static[k] = v
    return static, hyper


def _static_key(static: dict[str, Any]) -> Hashable | None:
    """``static`` as part of a kernel's key; None for an option that cannot key one (no kernel then).

    A tensor would key by identity (a new kernel for every new tensor), so it keys none.
    """
    key = tuple(sorted(static.items()))
    try:
        hash(key)
    except TypeError:
        return None
    return None if any(isinstance(v, Tensor) for _, v in key) else key


Layout = tuple[tuple[int, ...], tuple[tuple[str, tuple[int, ...]], ...]]
#: the shape an elementwise rule is traced with (any size works: the graph does not depend on it)
_FLAT = (4,)


def _kernel(rule: Any, static_key: Hashable, hyper: tuple[str, ...], layout: Layout, dtype: torch.dtype) -> Any:
    """``(Kernel, C function)`` for this configuration, or None if it has no native form.

    ``layout`` is the shape to trace with and the state's names and shapes at that shape.
    """
    key = (rule, static_key, hyper, layout, dtype)
    with _lock:
        if key not in _kernels:
            try:
                kernel = _codegen.generate(rule, dict(static_key), hyper, layout[0], dict(layout[1]), dtype)
            except _codegen.Unsupported:
                _kernels[key] = None
                return None
            try:
                fn = _compiled(kernel.source)
            except Exception as exc:  # noqa: BLE001 - a kernel that cannot be built must not lose the step
                warnings.warn(
                    f"optimlab: the native kernel of {getattr(rule, '__name__', rule)} ({dtype}, {dict(static_key)}) "
                    f"could not be built, the reference path takes its steps in this process: "
                    f"{type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=5,
                )
                fn = None
            _kernels[key] = None if fn is None else (kernel, fn)
        return _kernels[key]


def step_group(opt: RuleOptimizer, group: dict[str, Any], params: list[Tensor], kwargs: dict[str, Any]) -> None:
    """One step of ``group``'s parameters with a gradient: native where possible, else reference."""
    static, numbers = _split(kwargs)
    hyper = tuple(numbers)
    static_key = _static_key(static)
    elementwise = type(opt).elementwise
    batches: dict[tuple[Any, ...], list[tuple[Tensor, Tensor, State]]] = defaultdict(list)
    sizes: dict[tuple[Any, ...], list[int]] = defaultdict(list)  # a loop nest's (B, R, C) per tensor
    kernels: dict[tuple[Any, ...], Any] = {}
    for p, (grad, tensors, step) in zip(params, opt._prepare(group, params)):
        dtype = p.dtype
        if static_key is None or not _eligible(p, grad):
            layout = None
        elif elementwise:
            layout = _flat_layout(p, tensors)
        elif not p.is_contiguous() or not _loopnest.suits(p.shape):
            layout = None  # loop nests index rows and columns, and lose on many tiny matrices
        else:  # traced at a fixed rank; the state's shapes at that rank come from init_state
            layout = (_loopnest.MATRIX if p.dim() >= 2 else _loopnest.VECTOR, tuple(tensors))
        if (layout, dtype) not in kernels:
            kernels[layout, dtype] = _find(opt, group, static_key, hyper, layout, dtype)
        found = kernels[layout, dtype]
        key = (layout, dtype, step)
        if found is not None and found[0].dims:
            dims = _dims(p)
            if _fits(found[0], p, dims, tensors):
                sizes[key] += dims
            else:
                found = None
        if found is None:
            opt._update(p, grad, tensors, step, kwargs)
        else:
            batches[key].append((p, _like(grad, p), tensors))
    for (layout, dtype, step), batch in batches.items():
        try:
            _run(kernels[layout, dtype], batch, step, numbers, sizes.get((layout, dtype, step)))
        except MemoryError as exc:  # the kernel wrote nothing: the reference path does the step
            warnings.warn(f"{exc}; the reference path takes this step", RuntimeWarning, stacklevel=4)
            for p, grad, tensors in batch:
                opt._update(p, grad, tensors, step, kwargs)


def _find(
    opt: RuleOptimizer,
    group: dict[str, Any],
    static_key: Hashable,
    hyper: tuple[str, ...],
    layout: Any,
    dtype: torch.dtype,
) -> Any:
    """The kernel for a parameter of ``layout`` (None: the reference path)."""
    if layout is not None and not type(opt).elementwise:
        layout = _state_shapes(opt, group, layout, dtype)
    return None if layout is None else _kernel(type(opt).rule, static_key, hyper, layout, dtype)


def run(
    rule: Any,
    params: list[Tensor],
    grads: list[Tensor],
    states: list[State],
    step: float,
    kwargs: dict[str, Any],
    *,
    vectors: bool = False,
    columns: dict[str, Tensor] | None = None,
) -> bool:
    """Apply ``rule`` to every parameter in one native call, if it can be done.

    For other code than the optimizers' own step (Lookahead's synchronisation, Prodigy's passes): it
    returns False, having changed nothing, where the reference path must be taken.  The rule is
    elementwise, or with ``vectors`` it may sum over a whole tensor (a loop nest that sees every tensor
    as the vector of its elements: contiguous tensors only, state of their size or 0-dim).
    ``columns`` gives 0-dim state entries of every tensor at once: a name -> a vector of one element per
    tensor, in order (the tensors' sums, say), where a 0-dim view per tensor would cost more than the call.
    """
    if not params or not available():
        return False
    static, numbers = _split(kwargs)
    static_key = _static_key(static)
    if static_key is None:
        return False
    dtype = params[0].dtype
    columns = columns or {}
    for column in columns.values():
        if column.dtype != dtype or not column.is_cpu or column.shape != (len(params),) or not column.is_contiguous():
            return False
    if vectors:  # contiguous: the gradient as it is
        layouts = {_layout_as_vector(p, g, s) if p.dtype == dtype else None for p, g, s in zip(params, grads, states)}
        batch = list(zip(params, grads, states))
    else:
        layouts = {
            _flat_layout(p, s) if _eligible(p, g) and p.dtype == dtype else None
            for p, g, s in zip(params, grads, states)
        }
        batch = [(p, _like(g, p), s) for p, g, s in zip(params, grads, states)]
    layout = layouts.pop()
    if layouts or layout is None:
        return False
    layout = (layout[0], layout[1] + tuple((name, ()) for name in columns))
    kernel = _kernel(rule, static_key, tuple(numbers), layout, dtype)
    if kernel is None:
        return False
    sizes = [d for p in params for d in (1, 1, p.numel())] if vectors else None
    try:
        _run(kernel, batch, step, numbers, sizes, columns)
    except MemoryError:
        return False
    return True


def _run(
    kernel: tuple[_codegen.Kernel, Any],
    batch: list[tuple[Tensor, Tensor, State]],
    step: float,
    numbers: dict[str, float],
    sizes: list[int] | None = None,
    columns: dict[str, Tensor] | None = None,
) -> None:
    """Launch ``kernel`` on ``batch``; ``sizes``: a loop nest's (B, R, C) of each tensor, where known;
    ``columns``: 0-dim state of every tensor in one vector per name (:func:`run`)."""
    k, fn = kernel
    vec = [p.data_ptr() for p, _, _ in batch] + [g.data_ptr() for _, g, _ in batch]
    vec += [s[name].data_ptr() for name in k.vector[2:] for _, _, s in batch]
    sca = []
    for name in k.scalar:
        if columns and name in columns:  # element t of the vector is tensor t's
            start, width = columns[name].data_ptr(), columns[name].element_size()
            sca += range(start, start + width * len(batch), width)
        else:
            sca += [s[name].data_ptr() for _, _, s in batch]
    if sizes is None:
        sizes = [d for p, _, _ in batch for d in _dims(p)] if k.dims else [p.numel() for p, _, _ in batch]
    h = [step, *(numbers[name] for name in k.hyper)]
    # array.array: the cheapest C arrays to build from Python (a tiny step is all overhead)
    _launch(
        fn,
        len(batch),
        array.array("q", sizes),
        array.array("Q", vec),
        array.array("Q", sca or [0]),
        array.array("d", h),
    )


_shapes: dict[Hashable, Layout | None] = {}


def _state_shapes(
    opt: RuleOptimizer, group: dict[str, Any], layout: tuple[Any, ...], dtype: torch.dtype
) -> Layout | None:
    """The traced shape and the state's shapes at it (from ``init_state``, once per configuration),
    or None if a fresh state would have other entries than ``layout`` names."""
    key = (type(opt), layout, dtype)
    if key not in _shapes:
        example = opt.init_state(torch.zeros(layout[0], dtype=dtype), group)
        shapes = (layout[0], tuple((k, tuple(v.shape)) for k, v in example.items()))
        _shapes[key] = shapes if tuple(example) == layout[1] else None
    return _shapes[key]


def _launch(fn: Any, n: int, sizes: array.array, vec: array.array, sca: array.array, h: array.array) -> None:
    """Run a kernel over ``n`` tensors (its arguments are described in :class:`_codegen.Kernel`)."""
    address = [a.buffer_info()[0] for a in (sizes, vec, sca, h)]
    if fn(n, *address, torch.get_num_threads()):
        raise MemoryError("optimlab: a native optimizer kernel could not allocate its scratch memory")


def _eligible(p: Tensor, grad: Tensor) -> bool:
    return p.dtype in _DTYPES and p.is_cpu and _dense(p) and grad.dtype == p.dtype and grad.shape == p.shape


def _dense(t: Tensor) -> bool:
    # An elementwise kernel walks memory, not indices: any layout without gaps works when the
    # gradient and the state are laid out alike (conv weights are often channels_last).
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def _like(grad: Tensor, p: Tensor) -> Tensor:
    """``grad`` in ``p``'s memory layout (a copy only where they differ)."""
    return grad if grad.stride() == p.stride() else torch.empty_like(p).copy_(grad)


def _flat_layout(p: Tensor, state: State) -> Layout | None:
    """The layout of an elementwise rule's state, or None if ``p`` must take the reference path."""
    # run for every parameter at every step: the cheapest checks that make the C loop safe
    dtype, shape = p.dtype, p.shape
    layout = []
    for k, v in state.items():
        if v.dtype != dtype or not v.is_cpu:
            return None
        if v.shape == shape and v.stride() == p.stride():
            layout.append((k, _FLAT))
        elif not v.dim():
            layout.append((k, ()))
        else:
            return None
    return _FLAT, tuple(layout)


def _layout_as_vector(p: Tensor, grad: Tensor, state: State) -> Layout | None:
    """The layout of a loop nest that sees ``p`` as one vector (:func:`run`), or None where it cannot."""
    if not (_eligible(p, grad) and p.is_contiguous() and grad.is_contiguous()):
        return None
    dtype, n, vector = p.dtype, p.numel(), _loopnest.VECTOR
    layout = []
    for k, v in state.items():
        if v.dtype != dtype or not v.is_cpu or not v.is_contiguous():
            return None
        if not v.dim():
            layout.append((k, ()))
        elif v.numel() == n:
            layout.append((k, vector))
        else:
            return None
    return vector, tuple(layout)


def _dims(p: Tensor) -> tuple[int, int, int]:
    """``p`` as (batch, rows, columns), the way a loop-nest kernel sees it."""
    shape = p.shape
    if len(shape) < 2:
        return 1, 1, p.numel()
    rows, columns = shape[-2], shape[-1]
    return p.numel() // (rows * columns) if rows * columns else 0, rows, columns


def _fits(kernel: _codegen.Kernel, p: Tensor, dims: tuple[int, int, int], state: State) -> bool:
    """Whether ``state`` has the sizes ``kernel`` indexes for ``p`` of loop-nest sizes ``dims``
    (it would read out of bounds otherwise).  Run for every tensor at every step, so plain tests:
    no generator, no ``math.prod``."""
    b, r, c = dims
    dtype = p.dtype
    for name, axes in zip(kernel.vector[2:], kernel.axes[2:]):
        v = state[name]
        if v.dtype != dtype or not v.is_cpu or not v.is_contiguous():
            return False
        if v.numel() != (b if "b" in axes else 1) * (r if "i" in axes else 1) * (c if "j" in axes else 1):
            return False
    for name in kernel.scalar:
        v = state[name]
        if v.numel() != 1 or v.dtype != dtype:
            return False
    return True
