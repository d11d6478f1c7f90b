"""C kernels for rules that reduce over a tensor (Adafactor): one loop nest per pass over the data.

A tensor of two or more dimensions is seen as ``(B, R, C)``: a batch of matrices of ``R`` rows
and ``C`` columns (the rule must treat leading dimensions as a batch, as Adafactor does); others
as one row ``(1, 1, n)``.  The rule is traced on a ``(2, 3, 5)`` tensor (or a ``(7,)`` one), so
every value's shape tells its axes: size 2 is the batch ``b``, 3 the row ``i``, 5 the column
``j``.  Each value then lives where it is cheapest:

* full values (all axes) are recomputed, element by element, in every pass that needs them and
  never stored, except the outputs, written in the last pass;
* smaller values (a row statistic, a column factor, a tensor-wide RMS) are computed once, into a
  buffer (or a variable) indexed by their own axes;
* values of the step and hyperparameters only are computed once per call, as in the flat kernel.

A reduction (``mean``, ``sum``) of a full value is accumulated, in double precision, during the
pass over its input and is ready for everything after that pass; its *level* is one more than
its input's.  Pass ``L`` runs when a reduction needs a full value of level ``L``, and the last
pass writes the outputs.  Adafactor needs three passes over the gradient on a matrix (row and
column means of ``G^2``, then ``RMS(U)``, then the update) and two on a vector.

The passes split each tensor's elements evenly between threads; each thread sums into its own
slice of every accumulator, and the slices are added in thread order after the pass, so a run
repeats bit for bit for a given number of threads.  The summation order differs from torch's
(which sums in the tensor's dtype), so a reduction matches the reference path to rounding, not
bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch

from ._codegen import PREAMBLE, REDUCTIONS, WEAK, Kernel, Unsupported, _Emitter, _indent, _Value

aten = torch.ops.aten

_BITS = {"b": 2, "i": 4, "j": 8}
_SIZES = {"b": "B", "i": "R", "j": "C"}
#: the shapes a non-elementwise rule is traced with
MATRIX, VECTOR = (2, 3, 5), (7,)
_ALIASES = {aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.expand.default}


def _axes(mask: int) -> list[str]:
    return [a for a in "bij" if mask & _BITS[a]]


def index(mask: int) -> str:
    """C index of the element at loop position (b, i, j) in a buffer with axes ``mask``."""
    expr = ""
    for a in _axes(mask):
        expr = a if not expr else f"({expr}) * {_SIZES[a]} + {a}"
    return expr or "0"


def size(mask: int) -> str:
    return " * ".join(_SIZES[a] for a in _axes(mask)) or "1"


def loops(mask: int, body: list[str]) -> list[str]:
    """``body`` inside a loop over each axis of ``mask``."""
    lines = list(body)
    for a in reversed(_axes(mask)):
        lines = [f"for (int64_t {a} = 0; {a} < {_SIZES[a]}; ++{a}) {{", *("    " + x for x in lines), "}"]
    return lines


class NestEmitter(_Emitter):
    """Translates a traced rule that reduces into per-tensor passes (see the module docstring)."""

    def __init__(
        self,
        graph: torch.fx.Graph,
        keys: list[str],
        hyper: Any,
        ctype: str,
        param: tuple[int, ...],
        state: dict[str, tuple[int, ...]],
    ) -> None:
        super().__init__(graph, keys, {k: shape != () for k, shape in state.items()}, list(hyper), ctype)
        if param not in (MATRIX, VECTOR):
            raise Unsupported(f"traced with shape {param}")
        self.axis_of = dict(zip(param, "bij")) if param == MATRIX else {param[0]: "j"}
        self.full = 1 | sum(_BITS[a] for a in self.axis_of.values())
        self.shapes = {"param": param, "grad": param} | state
        self.level: dict[torch.fx.Node, int] = {}
        self.stages: dict[int, list[str]] = {}  # level -> statements for values smaller than full
        self.full_nodes: dict[torch.fx.Node, str] = {}  # full value -> its definition
        self.reductions: list[tuple[torch.fx.Node, torch.fx.Node, int]] = []  # (node, full input, input level)
        self.buffers: list[str] = []  # allocations per tensor
        self.allocated: list[str] = []  # their names, freed at the end
        self.acc: dict[torch.fx.Node, str] = {}  # reduction -> its double accumulator

    def mask(self, shape: Any) -> int:
        m = 1
        for n in shape:
            if n != 1:
                if n not in self.axis_of:
                    raise Unsupported(f"a value of shape {tuple(shape)}")
                m |= _BITS[self.axis_of[n]]
        return m

    def cls(self, *args: Any) -> int:
        m = WEAK
        for a in args:
            if isinstance(a, torch.fx.Node):
                m |= self.values[a].cls
        return m

    def _level(self, node: torch.fx.Node) -> int:
        return max((self.level.get(a, 0) for a in node.all_input_nodes), default=0)

    def define(self, node: torch.fx.Node, cls: int, ctype: str, expr: str) -> None:
        if cls == WEAK:
            super().define(node, cls, ctype, expr)
            return
        if cls != self.mask(node.meta["val"].shape):
            raise Unsupported(f"{node.target}: broadcast to an unexpected shape")
        level = self.level[node] = self._level(node)
        name = f"v{len(self.values)}"
        if cls == self.full:
            self.values[node] = _Value(cls, ctype, name)
            self.full_nodes[node] = f"const {ctype} {name} = {expr};"
        elif cls == 1:
            self.values[node] = _Value(cls, ctype, name)
            self.stages.setdefault(level, []).append(f"const {ctype} {name} = {expr};")
        else:
            self._allocate(f"{ctype} *{name} = malloc(sizeof({ctype}) * ({size(cls)}));", name)
            self.values[node] = _Value(cls, ctype, f"{name}[{index(cls)}]")
            self.stages.setdefault(level, []).extend(loops(cls, [f"{name}[{index(cls)}] = {expr};"]))

    def call(self, node: torch.fx.Node) -> None:
        fn = node.target
        if fn in _ALIASES:
            self.values[node] = self.values[node.args[0]]
            self.level[node] = self._level(node)
        elif fn in REDUCTIONS:
            self.reduce(node)
        else:
            super().call(node)

    def reduce(self, node: torch.fx.Node) -> None:
        x = node.args[0]
        src = self.values[x]
        if src.cls == WEAK or node.kwargs.get("dtype") is not None:
            raise Unsupported(f"{node.target} of a number or with a dtype")
        out = self.mask(node.meta["val"].shape)
        reduced = src.cls & ~out
        count = "1" if node.target in (aten.sum.dim_IntList, aten.sum.default) else f"(double)({size(reduced | 1)})"
        level = self.level[node] = self._level(node) + 1
        acc = self.acc[node] = f"acc{len(self.values)}"
        self._allocate(f"double *{acc} = calloc({size(out)}, sizeof(double));", acc)
        stage = self.stages.setdefault(level, [])
        if src.cls == self.full:
            self.reductions.append((node, x, level - 1))
        else:  # a smaller value: sum its buffer here
            stage.extend(loops(src.cls, [f"{acc}[{index(out)}] += (double){src.name};"]))
        name = f"v{len(self.values)}"
        value = f"({self.T})({acc}[{index(out)}] / {count})"
        if out == 1:
            self.values[node] = _Value(out, self.T, name)
            stage.append(f"const {self.T} {name} = {value};")
        else:
            self._allocate(f"{self.T} *{name} = malloc(sizeof({self.T}) * ({size(out)}));", name)
            self.values[node] = _Value(out, self.T, f"{name}[{index(out)}]")
            stage.extend(loops(out, [f"{name}[{index(out)}] = {value};"]))

    def _allocate(self, line: str, name: str) -> None:
        self.buffers.append(line)
        self.allocated.append(name)

    # -- the kernel -----------------------------------------------------------------------------
    def array_input(self, name: str) -> _Value:
        k = self.vector.index(name)
        m = self.mask(self.shapes[name])
        if m != self.full:  # a row or column statistic: read where it is
            return _Value(m, self.T, f"a{k}[{index(m)}]")
        self.loads.append(f"const {self.T} in_{k} = a{k}[e];")
        return _Value(m, self.T, f"in_{k}")

    def _needed(self, roots: list[Any]) -> list[str]:
        """Definitions of the full values ``roots`` depend on, in graph order."""
        needed: set[torch.fx.Node] = set()
        todo = [r for r in roots if isinstance(r, torch.fx.Node)]
        while todo:
            n = todo.pop()
            if n in self.full_nodes and n not in needed:
                needed.add(n)
                todo.extend(n.all_input_nodes)
            elif n not in self.full_nodes and n.op == "call_function" and n.target in _ALIASES:
                todo.extend(n.all_input_nodes)
        return [code for n, code in self.full_nodes.items() if n in needed]

    def _source(self, results: list[Any]) -> Kernel:
        outputs = dict(zip(["param", *self.keys], results))
        changed = {k: v for k, v in outputs.items() if isinstance(v, torch.fx.Node) and v.op != "placeholder"}
        full_out = {k: v for k, v in changed.items() if self.mask(self.shapes[k]) == self.full}
        last = max([self.level.get(v, 0) for v in full_out.values()], default=0)
        passes = sorted({lvl for _, _, lvl in self.reductions} | {last})
        body: list[str] = list(self.buffers)
        for level in range(max([last, *self.stages]) + 1):
            body += self.stages.get(level, [])
            if level in passes:
                body += self._pass(level, full_out if level == last else {})
        for k, v in changed.items():
            if k in full_out:
                continue
            if k in self.scalar:
                body.append(f"s{self.scalar.index(k)}[t][0] = {self.operand(v, self.T)};")
            else:
                m = self.mask(self.shapes[k])
                body += loops(m, [f"a{self.vector.index(k)}[{index(m)}] = {self.operand(v, self.T)};"])
        body += [f"free({name});" for name in self.allocated]
        T = self.T
        pointers = [f"{T} *restrict a{k} = ({T} *)vec[{k} * n + t];" for k in range(len(self.vector))]
        scalars = [f"{T} **s{j} = ({T} **)sca + {j} * n;" for j in range(len(self.scalar))]
        source = _NEST.format(
            preamble=PREAMBLE, T=T, scalars=_indent(scalars, 4), once=_indent(self.once, 4),
            pointers=_indent(pointers, 8), body=_indent(body, 8),
        )  # fmt: skip
        axes = tuple("".join(_axes(self.mask(self.shapes[k]))) for k in self.vector)
        return Kernel(source, tuple(self.vector), tuple(self.scalar), tuple(self.hyper), dims=True, axes=axes)

    def _pass(self, level: int, outputs: dict[str, Any]) -> list[str]:
        mine = [(node, x) for node, x, lvl in self.reductions if lvl == level]
        before, private, rows, after, merge = [], [], [], [], []
        element = list(self.loads) + self._needed([x for _, x in mine] + list(outputs.values()))
        for node, x in mine:
            acc, out = self.acc[node], self.values[node].cls
            # each thread sums into a slice of its own; the slices are added in thread order
            # afterwards, so that a run repeats bit for bit (atomic adds would not)
            before.append(f"double *q{acc} = calloc((size_t)nthreads * ({size(out)}), sizeof(double));")
            private.append(f"double *p{acc} = q{acc} + me * ({size(out)});")
            merge += [
                f"for (int64_t w = 0; w < nthreads; ++w)",
                f"    for (int64_t k = 0; k < {size(out)}; ++k)",
                f"        {acc}[k] += q{acc}[w * ({size(out)}) + k];",
                f"free(q{acc});",
            ]
            term = f"(double){self.values[x].name}"
            if out & _BITS["j"]:  # column sums: element by element into the slice
                element.append(f"p{acc}[{index(out)}] += {term};")
            else:  # a row's sum, then into its slot
                rows.append(acc)
                element.append(f"r{acc} += {term};")
                after.append(f"p{acc}[{index(out)}] += r{acc};")
        for k, v in outputs.items():
            element.append(f"a{self.vector.index(k)}[e] = {self.operand(v, self.T)};")
        simd = f"#pragma omp simd reduction(+: {', '.join('r' + a for a in rows)})" if rows else "#pragma omp simd"
        return _PASS.format(
            before=_indent(before, 0), private=_indent(private, 4), rows=_indent([f"double r{a} = 0;" for a in rows], 8),
            simd=simd, element=_indent(element, 12), after=_indent(after, 8), merge=_indent(merge, 0),
        ).splitlines()  # fmt: skip


_PASS = """\
/* a pass over every element */
{before}
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && B * R * C >= 65536)
#endif
{{
#ifdef _OPENMP
    const int64_t parts = omp_get_num_threads(), me = omp_get_thread_num();
#else
    const int64_t parts = 1, me = 0;
#endif
    const int64_t total = B * R * C;
    int64_t share = (total + parts - 1) / parts;
    share = (share + 15) & ~(int64_t)15;
    const int64_t lo = me * share, hi = lo + share < total ? lo + share : total;
{private}
    for (int64_t row = C > 0 ? lo / C : 0; C > 0 && row < B * R && row * C < hi; ++row) {{
        const int64_t b = row / R, i = row % R;
        const int64_t j0 = lo > row * C ? lo - row * C : 0;
        const int64_t j1 = hi - row * C < C ? hi - row * C : C;
{rows}
        {simd}
        for (int64_t j = j0; j < j1; ++j) {{
            const int64_t e = row * C + j;
{element}
        }}
{after}
    }}
}}
{merge}"""

_NEST = """\
/* generated by optimlab.optim._loopnest from an optimizer's update rule */
{preamble}
int optimlab_step(int64_t n, const int64_t *dims, void **vec, void **sca, const double *h, int nthreads)
{{
{scalars}
{once}
    for (int64_t t = 0; t < n; ++t) {{
        const int64_t B = dims[3 * t], R = dims[3 * t + 1], C = dims[3 * t + 2];
{pointers}
{body}
    }}
    return 0;
}}
"""
