"""The native fast path: each optimizer's rule as one compiled C loop over all of a group's tensors.

An optimizer step is memory traffic.  The reference paths run the rule one tensor operation at a
time, so every intermediate makes a round trip through memory; here the rule, translated by
:mod:`~optimlab.optim._codegen`, reads each parameter, gradient and state element once and writes
the parameter and state once, on every thread (OpenMP), for all the tensors of a group in one call.
Hyperparameters and the step count are arguments of the call: a scheduler never recompiles.

When it is used (``fast`` is a constructor option and a param-group entry):

* ``fast=None`` (the default) or ``True``: for float32/float64 CPU tensors, when a C compiler is
  found.  Without one, ``None`` quietly keeps the reference path and ``True`` warns once.
* ``fast=False``: never; the reference path.

Other tensors (CUDA, 16-bit, memory layouts other than contiguous or channels_last, state of
another layout) take the reference path.
Rules that reduce over a tensor (Adafactor) get a loop-nest kernel (:mod:`~optimlab.optim._loopnest`)
that updates one tensor after another.

The first step of each configuration (rule, options, which hyperparameters are 0, dtype, state
layout) traces the rule (tens of ms) and compiles it with ``$CC`` or the first of ``cc``,
``gcc``, ``clang`` on the ``PATH`` (a fraction of a second).  Kernels are cached on disk, keyed by
their source, the compiler and the machine, under ``$OPTIMLAB_CACHE_DIR/kernels`` (default
``~/.cache/optimlab/kernels``), so later processes only trace; where that directory cannot be
written, kernels go to a temporary directory, with a warning.  If a compilation fails, a warning
is given once and the reference path is used for the rest of the process.

Results equal the reference path's bit for bit wherever torch rounds as IEEE 754 says; torch's
vectorised CPU ``sqrt`` is not correctly rounded (about 0.6% of float32 results are one unit in the
last place off) and C's is, which is the only difference the tests find.
"""

from __future__ import annotations

import array
import ctypes
import getpass
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections import defaultdict
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from . import _codegen, _loopnest

if TYPE_CHECKING:
    from ._base import RuleOptimizer, State

_DTYPES = (torch.float32, torch.float64)
# ISO C (no GNU extensions) keeps a*b + c as two roundings: no FMA contraction.  Neither
# -fno-math-errno nor -fno-trapping-math changes a result; they let sqrt and selects vectorise.
_FLAGS = ["-std=c11", "-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared"]
_NATIVE = ["-march=native"]
_OPENMP = ["-fopenmp"]

_lock = threading.Lock()
_disabled: str | None = None  # why the native path is off in this process
_warned = False
_compiler: tuple[str, str] | None = None  # (path, identity)
_kernels: dict[Hashable, Any] = {}  # configuration -> (Kernel, C function), or None when unsupported


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$OPTIMLAB_CACHE_DIR/kernels`` or ``~/.cache/optimlab/kernels``."""
    root = (
        os.environ.get("OPTIMLAB_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "optimlab"
    )
    return Path(root) / "kernels"


def available() -> bool:
    """Whether a C compiler was found (and no compilation has failed in this process)."""
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


def _find_compiler() -> tuple[str, str] | None:
    global _compiler
    if _disabled is not None:
        return None
    if _compiler is None:
        names = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
        path = next((p for p in map(shutil.which, names) if p), None)
        if path is None:
            _disable(f"no C compiler found (tried {', '.join(names)}; set CC)")
            return None
        try:
            version = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=60, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            _disable(f"the C compiler {path} does not run ({exc})")
            return None
        _compiler = (path, version)
    return _compiler


def _disable(reason: str) -> None:
    global _disabled
    _disabled = reason


def _warn() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"optimlab: native optimizer steps are off, the reference path is used: {_disabled}",
            RuntimeWarning,
            stacklevel=5,
        )


def _machine() -> str:
    # -march=native code runs only where the same instructions exist
    try:
        with open("/proc/cpuinfo") as f:
            return "".join(line for line in f if line.startswith(("model name", "flags")))[:100_000]
    except OSError:
        return platform.processor() + platform.machine()


def _build(source: str) -> Any:
    """The C function of ``source``, compiled or taken from the disk cache."""
    path, identity = _compiler  # type: ignore[misc]
    key = hashlib.sha256("\0".join([source, identity, " ".join(_FLAGS), _machine()]).encode()).hexdigest()[:32]
    directory = cache_dir()
    lib = directory / f"{key}.so"
    if not lib.exists():
        directory = _writable(directory)
        lib = directory / f"{key}.so"
    if not lib.exists():
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            src = Path(tmp) / "kernel.c"
            src.write_text(source)
            errors = ""
            # -march=native and OpenMP where the compiler has them, plain C11 otherwise
            for extra in (_NATIVE + _OPENMP, _OPENMP, []):
                out = Path(tmp) / "kernel.so"
                done = subprocess.run(
                    [path, *_FLAGS, *extra, str(src), "-o", str(out), "-lm"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode == 0:
                    os.replace(out, lib)  # atomic: a concurrent process sees all of it or nothing
                    break
                errors = done.stderr
            else:
                raise RuntimeError(f"{path} failed: {errors.strip()[-2000:]}")
    fn = ctypes.CDLL(str(lib)).optimlab_step
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    return fn


def _writable(directory: Path) -> Path:
    """``directory``, created; or, where it cannot be written, a temporary one (with a warning)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if os.access(directory, os.W_OK):
            return directory
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"optimlab-kernels-{getpass.getuser()}"
    if fallback not in _fallbacks:
        _fallbacks.add(fallback)
        warnings.warn(
            f"optimlab: the kernel cache {directory} cannot be written; kernels go to {fallback} "
            "(set OPTIMLAB_CACHE_DIR to keep them elsewhere)",
            RuntimeWarning,
            stacklevel=6,
        )
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


_fallbacks: set[Path] = set()


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """Rule keyword arguments -> (constants the kernel specialises on, run-time numbers).

    A number equal to 0 is a constant, because rules skip its term (``_math.is_zero``) exactly
    as the reference path does: crossing 0 builds one more kernel, once.
    """
    static, hyper = {}, {}
    for k, v in kwargs.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v != 0:
            hyper[k] = float(v)
        elif isinstance(v, Tensor) and v.numel() == 1 and v.item() != 0:
            hyper[k] = float(v.item())
        else:
            static[k] = v
    return static, hyper


def _static_key(static: dict[str, Any]) -> Hashable | None:
    """``static`` as part of a kernel's key; None for an unhashable option (no kernel then)."""
    key = tuple(sorted(static.items()))
    try:
        hash(key)
    except TypeError:
        return None
    return key


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
                _kernels[key] = (kernel, _build(kernel.source))
            except Exception as exc:  # noqa: BLE001 - a failed build must not lose the step
                _disable(f"compilation failed ({type(exc).__name__}: {exc})")
                _warn()
                return None
        return _kernels[key]


def step_group(opt: RuleOptimizer, group: dict[str, Any], params: list[Tensor], kwargs: dict[str, Any]) -> None:
    """One step of ``group``'s parameters with a gradient: native where possible, else reference."""
    static, numbers = _split(kwargs)
    hyper = tuple(numbers)
    static_key = _static_key(static)
    elementwise = type(opt).elementwise
    batches: dict[tuple[Any, ...], list[tuple[Tensor, Tensor, State]]] = defaultdict(list)
    kernels: dict[tuple[Any, ...], Any] = {}
    for p, (grad, tensors, step) in zip(params, opt._prepare(group, params)):
        if static_key is None or not _eligible(p, grad):
            layout = None
        elif elementwise:
            layout = _flat_layout(p, tensors)
        elif not p.is_contiguous():
            layout = None  # loop nests index rows and columns
        else:  # traced at a fixed rank; the state's shapes at that rank come from init_state
            layout = (_loopnest.MATRIX if p.dim() >= 2 else _loopnest.VECTOR, tuple(tensors))
        if (layout, p.dtype) not in kernels:
            kernels[layout, p.dtype] = _find(opt, group, static_key, hyper, layout, p.dtype)
        found = kernels[layout, p.dtype]
        if found is None or (found[0].dims and not _fits(found[0], p, tensors)):
            opt._update(p, grad, tensors, step, kwargs)
        else:
            batches[(layout, p.dtype, step)].append((p, _like(grad, p), tensors))
    for (layout, dtype, step), batch in batches.items():
        try:
            _run(kernels[layout, dtype], batch, step, numbers)
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
    rule: Any, params: list[Tensor], grads: list[Tensor], states: list[State], step: float, kwargs: dict[str, Any]
) -> bool:
    """Apply an elementwise ``rule`` to every parameter in one native call, if it can be done.

    For other code than the optimizers' own step (Lookahead's synchronisation): it returns False,
    having changed nothing, where the reference path must be taken.
    """
    if not params or not available():
        return False
    static, numbers = _split(kwargs)
    static_key = _static_key(static)
    if static_key is None:
        return False
    dtype = params[0].dtype
    layouts = {
        _flat_layout(p, s) if _eligible(p, g) and p.dtype == dtype else None for p, g, s in zip(params, grads, states)
    }
    layout = layouts.pop()
    if layouts or layout is None:
        return False
    kernel = _kernel(rule, static_key, tuple(numbers), layout, dtype)
    if kernel is None:
        return False
    try:
        _run(kernel, [(p, _like(g, p), s) for p, g, s in zip(params, grads, states)], step, numbers)
    except MemoryError:
        return False
    return True


def _run(
    kernel: tuple[_codegen.Kernel, Any],
    batch: list[tuple[Tensor, Tensor, State]],
    step: float,
    numbers: dict[str, float],
) -> None:
    k, fn = kernel
    vec = [p.data_ptr() for p, _, _ in batch] + [g.data_ptr() for _, g, _ in batch]
    vec += [s[name].data_ptr() for name in k.vector[2:] for _, _, s in batch]
    sca = [s[name].data_ptr() for name in k.scalar for _, _, s in batch] or [0]
    sizes = [d for p, _, _ in batch for d in _dims(p)] if k.dims else [p.numel() for p, _, _ in batch]
    h = [step, *(numbers[name] for name in k.hyper)]
    # array.array: the cheapest C arrays to build from Python (a tiny step is all overhead)
    _launch(fn, len(batch), array.array("q", sizes), array.array("Q", vec), array.array("Q", sca), array.array("d", h))


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


def _dims(p: Tensor) -> tuple[int, int, int]:
    """``p`` as (batch, rows, columns), the way a loop-nest kernel sees it."""
    if p.dim() < 2:
        return 1, 1, p.numel()
    return p.numel() // (p.shape[-2] * p.shape[-1]) if p.numel() else 0, p.shape[-2], p.shape[-1]


def _fits(kernel: _codegen.Kernel, p: Tensor, state: State) -> bool:
    """Whether ``state`` has the sizes ``kernel`` indexes (it would read out of bounds otherwise)."""
    b, r, c = _dims(p)
    sizes = {"b": b, "i": r, "j": c}
    for name, axes in zip(kernel.vector[2:], kernel.axes[2:]):
        v = state[name]
        if (
            v.dtype != p.dtype
            or not v.is_cpu
            or not v.is_contiguous()
            or v.numel() != math.prod(sizes[a] for a in axes)
        ):
            return False
    return all(state[name].numel() == 1 and state[name].dtype == p.dtype for name in kernel.scalar)
