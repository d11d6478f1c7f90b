"""Translate an optimizer's update rule into one C loop: the code generator of the native fast path.

The rule (``optim/<name>.py``) is traced, not rewritten: :func:`generate` runs it once under
``make_fx`` on small example tensors and turns the recorded ATen graph into C source.  Every
value of the graph falls in one of three classes, and each is computed where it costs least:

``weak``
    depends only on the step count, hyperparameters and constants (``1 - beta1**step``,
    ``lr / bias1``): computed once per call, in double precision, like the Python floats it is in
    the reference path;
``scalar``
    a 0-dim value that depends on 0-dim state (NAdam's ``mu_product``): computed once per tensor;
``vector``
    everything else: computed per element, in the parameter's dtype.

Types follow the reference path exactly.  There, ``step`` and the hyperparameters are Python
floats: arithmetic among them is double precision, and where one meets a tensor it is rounded to
the tensor's dtype first (a "wrapped number" never promotes a tensor).  The traced graph sees
float64 0-dim tensors instead, whose promotion rules differ, so types are not read from the trace
but inferred here with exactly those rules.  Each ATen operation becomes the expression that
torch's CPU kernel evaluates (``pow(x, 2)`` is ``x*x``, ``maximum`` propagates NaN, ...), and the
C is compiled without contraction of ``a*b + c`` into FMA, so every operation rounds as the
reference path's does.  An operation without a translation raises :class:`Unsupported`, and the
optimizer keeps its reference path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx.experimental.proxy_tensor import make_fx

aten = torch.ops.aten

#: version of the generated code: part of every cached kernel's key
VERSION = 1

WEAK, SCALAR, VECTOR = 0, 1, 2
_CTYPES = {torch.float32: "float", torch.float64: "double"}


class Unsupported(Exception):
    """The rule uses an operation (or a form of one) that has no C translation."""


@dataclass(frozen=True)
class Kernel:
    """Generated C source and the order of its arguments.

    The C function ``int optimlab_step(n, numel, vec, sca, h, nthreads)`` updates ``n`` tensors
    and returns 0, or non-zero where it could not allocate its scratch memory (nothing written then):
    ``vec[j*n + t]`` points to tensor ``t`` of the ``j``-th entry of ``vector`` (``param``,
    ``grad``, then full-size state), ``sca[j*n + t]`` to its ``j``-th 0-dim state of
    ``scalar``, and ``h`` holds ``step`` followed by ``hyper``, as doubles.
    """

    source: str
    vector: tuple[str, ...]
    scalar: tuple[str, ...]
    hyper: tuple[str, ...]
    #: the second argument holds (batch, rows, columns) per tensor instead of its size
    dims: bool = False
    #: with ``dims``: the axes ("b", "i", "j") of each entry of ``vector``
    axes: tuple[str, ...] = ()


@dataclass
class _Value:
    cls: int
    ctype: str  # "double" for weak numbers, "int" for booleans, else the tensor's C type
    name: str


def generate(
    rule: Callable[..., Any],
    static: dict[str, Any],
    hyper: Sequence[str],
    param: tuple[int, ...],
    state: dict[str, tuple[int, ...]],
    dtype: torch.dtype,
) -> Kernel:
    """C source of ``rule`` for ``dtype`` tensors.

    ``static`` are the keyword arguments the code specialises on (options, hyperparameters equal
    to 0), ``hyper`` the names of the numeric ones passed at run time, ``param`` and ``state``
    the shapes to trace with: for an elementwise rule ``(4,)``, with state of that shape or 0-dim;
    for a rule that reduces, see :mod:`~optimlab.optim._loopnest`.
    """
    if dtype not in _CTYPES:
        raise Unsupported(f"dtype {dtype}")
    keys = list(state)

    def flat_rule(param: Any, grad: Any, step: Any, *rest: Any) -> tuple[Any, ...]:
        st = dict(zip(keys, rest[: len(keys)]))
        new_param, new_state = rule(param, grad, st, step, **static, **dict(zip(hyper, rest[len(keys) :])))
        unknown = set(new_state) - set(keys)
        if unknown:
            raise Unsupported(f"the rule returns state {sorted(unknown)} it was not given")
        return (new_param, *(new_state.get(k) for k in keys))

    # distinct tensors: make_fx identifies inputs by object
    args = [torch.zeros(param, dtype=dtype), torch.zeros(param, dtype=dtype), torch.zeros((), dtype=torch.float64)]
    args += [torch.zeros(state[k], dtype=dtype) for k in keys] + [torch.zeros((), dtype=torch.float64) for _ in hyper]
    try:
        graph = make_fx(flat_rule)(*args).graph
        if any(node.target in REDUCTIONS for node in graph.nodes):
            from ._loopnest import NestEmitter

            return NestEmitter(graph, keys, hyper, _CTYPES[dtype], param, state).kernel()
        if any(shape not in (param, ()) for shape in state.values()):
            raise Unsupported("state of another shape than the parameter, and no reduction")
        return _Emitter(
            graph, keys, {k: shape == param for k, shape in state.items()}, list(hyper), _CTYPES[dtype]
        ).kernel()
    except Unsupported:
        raise
    except Exception as exc:  # whatever cannot be traced or translated has no fast path
        raise Unsupported(f"{type(exc).__name__}: {exc}") from exc


class _Emitter:
    def __init__(
        self, graph: torch.fx.Graph, keys: list[str], state: dict[str, bool], hyper: list[str], ctype: str
    ) -> None:
        self.graph, self.keys, self.state, self.hyper, self.T = graph, keys, state, hyper, ctype
        self.vector = ["param", "grad"] + [k for k in keys if state[k]]
        self.scalar = [k for k in keys if not state[k]]
        self.values: dict[torch.fx.Node, _Value] = {}
        self.once: list[str] = []  # weak values
        self.per_tensor: list[str] = []  # scalar values
        self.per_element: list[str] = []  # vector values
        self.loads: list[str] = []
        self.casts: dict[str, str] = {}  # weak value -> its hoisted cast to T

    # -- values ---------------------------------------------------------------------------------
    def operand(self, arg: Any, ctype: str) -> str:
        """``arg`` (a node or a Python number) as an expression of C type ``ctype``."""
        if isinstance(arg, torch.fx.Node):
            v = self.values[arg]
            if v.ctype == ctype:
                return v.name
            if v.cls == WEAK and ctype == self.T:
                if v.name not in self.casts:
                    self.casts[v.name] = f"{v.name}_T"
                    self.once.append(f"const {self.T} {v.name}_T = ({self.T}){v.name};")
                return self.casts[v.name]
            return f"(({ctype}){v.name})"
        if isinstance(arg, bool):
            return "1" if arg else "0"
        if isinstance(arg, (int, float)):
            return f"(({ctype}){_literal(float(arg))})"
        raise Unsupported(f"argument {arg!r}")

    def cls(self, *args: Any) -> int:
        return max([self.values[a].cls for a in args if isinstance(a, torch.fx.Node)], default=WEAK)

    def compute_type(self, *args: Any) -> str:
        """The type an operation on ``args`` computes in: double among weak numbers, else T."""
        return "double" if self.cls(*args) == WEAK else self.T

    def define(self, node: torch.fx.Node, cls: int, ctype: str, expr: str) -> None:
        name = f"v{len(self.values)}"
        self.values[node] = _Value(cls, ctype, name)
        target = {WEAK: self.once, SCALAR: self.per_tensor, VECTOR: self.per_element}[cls]
        target.append(f"const {ctype} {name} = {expr};")

    # -- the graph ------------------------------------------------------------------------------
    def kernel(self) -> Kernel:
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        inputs = ["param", "grad", "step", *self.keys, *self.hyper]
        self.input_names = dict(zip(placeholders, inputs))
        for node, name in zip(placeholders, inputs):
            if name in self.vector:
                self.values[node] = self.array_input(name)
            elif name in self.scalar:
                self.values[node] = _Value(SCALAR, self.T, f"s{self.scalar.index(name)}[t][0]")
            else:
                j = (["step"] + self.hyper).index(name)
                self.values[node] = _Value(WEAK, "double", f"h{j}")
                self.once.append(f"const double h{j} = h[{j}];")
        outputs: list[Any] = []
        for node in self.graph.nodes:
            if node.op == "call_function":
                self.call(node)
            elif node.op == "output":
                outputs = list(node.args[0])
            elif node.op != "placeholder":
                raise Unsupported(f"graph node {node.op} {node.target}")  # e.g. a tensor constant
        return self._source(outputs)

    def array_input(self, name: str) -> _Value:
        """The value of input array ``name`` (param, grad or state), loaded once per element."""
        k = self.vector.index(name)
        self.loads.append(f"const {self.T} in_{k} = a{k}[i];")
        return _Value(VECTOR, self.T, f"in_{k}")

    def call(self, node: torch.fx.Node) -> None:
        fn, args = node.target, node.args
        if fn in _ALIASES:
            self.values[node] = self.values[args[0]]
            return
        if fn is aten.scalar_tensor.default:
            self.define(node, WEAK, "double", _literal(float(args[0])))
            return
        if node.kwargs.get("alpha", 1) != 1:
            raise Unsupported(f"{fn} with alpha")
        cls = self.cls(*args)
        if fn in _BINARY:
            ct = self.compute_type(*args)
            a, b = (self.operand(x, ct) for x in args[:2])
            if fn is aten.div.Tensor and self.cls(args[0]) == WEAK and cls != WEAK:
                # number / tensor is Tensor.__rtruediv__ in the reference path: reciprocal, then *
                self.define(node, cls, ct, f"((({ct})1 / {b}) * {a})")
                return
            if fn in (aten.rsub.Scalar, aten.rsub.Tensor):
                a, b = b, a
            self.define(node, cls, ct, _BINARY[fn].format(a=a, b=b, T=ct))
        elif fn in _COMPARE:
            ct = self.compute_type(*args)
            a, b = (self.operand(x, ct) for x in args[:2])
            self.define(node, cls, "int", f"({a} {_COMPARE[fn]} {b})")
        elif fn in (aten.bitwise_or.Tensor, aten.logical_or.default, aten.bitwise_and.Tensor, aten.logical_and.default):
            a, b = (self.operand(x, "int") for x in args[:2])
            op = "|" if fn in (aten.bitwise_or.Tensor, aten.logical_or.default) else "&"
            self.define(node, cls, "int", f"({a} {op} {b})")
        elif fn in (aten.logical_not.default, aten.bitwise_not.default):
            self.define(node, cls, "int", f"(!{self.operand(args[0], 'int')})")
        elif fn in _UNARY:
            ct = self.compute_type(*args)
            a = self.operand(args[0], ct)
            self.define(node, cls, ct, _UNARY[fn].format(a=a, T=ct, f=_suffix(ct)))
        elif fn is aten.where.self:
            ct = self.compute_type(*args[1:])
            c, a, b = self.operand(args[0], "int"), self.operand(args[1], ct), self.operand(args[2], ct)
            self.define(node, cls, ct, f"({c} ? {a} : {b})")
        elif fn in (aten.clamp.Tensor, aten.clamp.default):
            ct = self.compute_type(*args)
            x = self.operand(args[0], ct)
            if len(args) > 1 and args[1] is not None:
                x = f"om_max_{_suffix(ct) or 'd'}({x}, {self.operand(args[1], ct)})"
            if len(args) > 2 and args[2] is not None:
                x = f"om_min_{_suffix(ct) or 'd'}({x}, {self.operand(args[2], ct)})"
            self.define(node, cls, ct, x)
        elif fn in _POW:
            self.power(node)
        elif fn in (aten.remainder.Scalar, aten.remainder.Tensor) and cls == WEAK:
            # Python's float %, whose result takes the divisor's sign
            a, b = (self.operand(x, "double") for x in args[:2])
            self.define(node, WEAK, "double", f"om_mod({a}, {b})")
        else:
            raise Unsupported(f"operation {fn}")

    def power(self, node: torch.fx.Node) -> None:
        fn, (base, exp) = node.target, node.args
        cls = self.cls(base, exp)
        if cls == WEAK:
            # Python's float ** float is C's pow, in double
            self.define(node, WEAK, "double", f"pow({self.operand(base, 'double')}, {self.operand(exp, 'double')})")
            return
        # torch's CPU pow special-cases these scalar exponents of a tensor base
        ct = self.T
        if fn is aten.pow.Tensor_Scalar and isinstance(exp, (int, float)):
            x = self.operand(base, ct)
            special = {2.0: f"({x} * {x})", 0.5: f"sqrt{_suffix(ct)}({x})", 1.0: x}
            if float(exp) in special:
                self.define(node, cls, ct, special[float(exp)])
                return
        raise Unsupported(f"{fn} of a tensor")

    # -- source ---------------------------------------------------------------------------------
    def unchanged(self, name: str, value: Any) -> bool:
        """Whether output ``name`` is its own input: another input (``last_grad = grad``) must be stored."""
        return isinstance(value, torch.fx.Node) and self.input_names.get(value) == name

    def _source(self, outputs: list[Any]) -> Kernel:
        new_param, new_state = outputs[0], dict(zip(self.keys, outputs[1:]))
        targets = {"param": new_param} | new_state
        stores, scalar_stores = [], []
        for name, value in targets.items():
            if value is None or self.unchanged(name, value):
                continue
            if name in self.scalar:
                if self.values[value].cls == VECTOR:
                    raise Unsupported(f"0-dim state {name!r} gets a full-size value")
                scalar_stores.append(f"s{self.scalar.index(name)}[t][0] = {self.operand(value, self.T)};")
            else:
                j = self.vector.index(name)
                stores.append(f"a{j}[i] = {self.operand(value, self.T)};")
        T = self.T
        pointers = "\n".join(f"        {T} *restrict a{j} = ({T} *)vec[{j} * n + t];" for j in range(len(self.vector)))
        scalars = "\n".join(f"    {T} **s{j} = ({T} **)sca + {j} * n;" for j in range(len(self.scalar)))
        source = _TEMPLATE.format(
            preamble=PREAMBLE,
            version=VERSION,
            T=T,
            scalars=scalars,
            once=_indent(self.once, 4),
            per_tensor=_indent(self.per_tensor, 8),
            per_tensor_again=_indent(self.per_tensor, 8),
            pointers=pointers,
            loads=_indent(self.loads, 12),
            per_element=_indent(self.per_element, 12),
            stores=_indent(stores, 12),
            scalar_stores=_indent(scalar_stores, 8),
        )
        return Kernel(source, tuple(self.vector), tuple(self.scalar), tuple(self.hyper))


def _suffix(ctype: str) -> str:
    return "f" if ctype == "float" else ""


def _literal(x: float) -> str:
    if math.isnan(x):
        return "NAN"
    if x in (float("inf"), float("-inf")):
        return "INFINITY" if x > 0 else "(-INFINITY)"
    return repr(x) if "e" in repr(x) or "." in repr(x) else f"{x!r}.0"


def _indent(lines: list[str], n: int) -> str:
    return "\n".join(" " * n + line for line in lines)


_ALIASES = {aten.clone.default, aten.detach.default, aten.alias.default, aten.lift_fresh_copy.default}
_BINARY = {
    aten.add.Tensor: "({a} + {b})",
    aten.add.Scalar: "({a} + {b})",
    aten.sub.Tensor: "({a} - {b})",
    aten.sub.Scalar: "({a} - {b})",
    aten.rsub.Scalar: "({a} - {b})",
    aten.rsub.Tensor: "({a} - {b})",
    aten.mul.Tensor: "({a} * {b})",
    aten.mul.Scalar: "({a} * {b})",
    aten.div.Tensor: "({a} / {b})",
    aten.div.Scalar: "({a} / {b})",
    aten.maximum.default: "om_max_{T}({a}, {b})",
    aten.minimum.default: "om_min_{T}({a}, {b})",
}
_COMPARE = {
    aten.gt.Scalar: ">",
    aten.gt.Tensor: ">",
    aten.ge.Scalar: ">=",
    aten.ge.Tensor: ">=",
    aten.lt.Scalar: "<",
    aten.lt.Tensor: "<",
    aten.le.Scalar: "<=",
    aten.le.Tensor: "<=",
    aten.eq.Scalar: "==",
    aten.eq.Tensor: "==",
    aten.ne.Scalar: "!=",
    aten.ne.Tensor: "!=",
}
_UNARY = {
    aten.sqrt.default: "sqrt{f}({a})",
    aten.abs.default: "fabs{f}({a})",
    aten.neg.default: "(-{a})",
    aten.reciprocal.default: "(({T})1 / {a})",
    aten.rsqrt.default: "(({T})1 / sqrt{f}({a}))",
    aten.log.default: "log{f}({a})",
    # torch.sign: 0 for 0, -0 and NaN
    aten.sign.default: "(({T})(({a} > 0) - ({a} < 0)))",
}
_POW = {aten.pow.Tensor_Tensor, aten.pow.Tensor_Scalar, aten.pow.Scalar}
REDUCTIONS = {aten.mean.dim, aten.mean.default, aten.sum.dim_IntList, aten.sum.default}

PREAMBLE = """\
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* torch.maximum / torch.minimum: NaN if either operand is NaN */
static inline float om_max_float(float a, float b) { return a != a ? a : (b != b ? b : (a > b ? a : b)); }
static inline float om_min_float(float a, float b) { return a != a ? a : (b != b ? b : (a < b ? a : b)); }
static inline double om_max_double(double a, double b) { return a != a ? a : (b != b ? b : (a > b ? a : b)); }
static inline double om_min_double(double a, double b) { return a != a ? a : (b != b ? b : (a < b ? a : b)); }
#define om_max_f om_max_float
#define om_min_f om_min_float
#define om_max_d om_max_double
#define om_min_d om_min_double
static inline double om_mod(double a, double b) { const double m = fmod(a, b); return m != 0 && ((m < 0) != (b < 0)) ? m + b : m; }
"""

#: a small program that needs what every kernel needs of the compiler: its headers, OpenMP where
#: it is asked for, a shared library
PROBE = (
    PREAMBLE
    + """
int optimlab_probe(int n)
{
    int threads = 1;
#ifdef _OPENMP
    #pragma omp parallel num_threads(n)
    #pragma omp single
    threads = omp_get_num_threads();
#endif
    return threads + (int)sqrt((double)n);
}
"""
)

_TEMPLATE = """\
/* generated by optimlab.optim._codegen (version {version}) from an optimizer's update rule */
{preamble}
int optimlab_step(int64_t n, const int64_t *numel, void **vec, void **sca, const double *h, int nthreads)
{{
{scalars}
{once}
    int64_t total = 0;
    for (int64_t t = 0; t < n; ++t)
        total += numel[t];
#ifdef _OPENMP
    /* below ~64K elements the threads cost more than they save */
    #pragma omp parallel num_threads(nthreads) if (nthreads > 1 && total >= 65536)
#endif
    {{
#ifdef _OPENMP
        const int64_t parts = omp_get_num_threads(), me = omp_get_thread_num();
#else
        const int64_t parts = 1, me = 0;
#endif
        /* an equal share of all elements per thread, on 64-byte boundaries */
        int64_t share = (total + parts - 1) / parts;
        share = (share + 15) & ~(int64_t)15;
        const int64_t lo = me * share, hi = lo + share < total ? lo + share : total;
        int64_t base = 0;
        for (int64_t t = 0; t < n && base < hi; base += numel[t], ++t) {{
            const int64_t begin = lo > base ? lo - base : 0;
            const int64_t end = hi - base < numel[t] ? hi - base : numel[t];
            if (begin >= end)
                continue;
{pointers}
{per_tensor}
#if defined(__GNUC__) && !defined(__clang__)
            /* no element reads another's (the arrays are distinct, as restrict says): GCC checks aliasing at run
               time for at most 10 pairs and left the loop scalar above that (Adan's 6 arrays: 5.8x Adam's time) */
            #pragma GCC ivdep
#endif
            for (int64_t i = begin; i < end; ++i) {{
{loads}
{per_element}
{stores}
            }}
        }}
    }}
    /* 0-dim state is written once per tensor, after every element has read its old value */
    for (int64_t t = 0; t < n; ++t) {{
{per_tensor_again}
{scalar_stores}
    }}
    return 0;
}}
"""
