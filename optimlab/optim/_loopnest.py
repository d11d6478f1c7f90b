"""C kernels for rules that reduce over a tensor (Adafactor, LAMB, MARS, Prodigy's sums): loop nests over its tiles.

A tensor of two or more dimensions is seen as ``(B, R, C)``: a batch of matrices of ``R`` rows
and ``C`` columns (the rule must treat leading dimensions as a batch, as Adafactor does); others
as one row ``(1, 1, n)``.  The rule is traced on a ``(2, 3, 5)`` tensor (or a ``(7,)`` one), so
every value's shape tells its axes: size 2 is the batch ``b``, 3 the row ``i``, 5 the column
``j``.

**Tiles.**  Each tensor is cut into tiles by its shape alone (never by the number of threads):
about ``min(64, n / 32768)`` of them, so a small tensor is one tile.

* ``B`` at least the number of tiles (conv weights ``(w, w, 3, 3)``, small tensors): each tile is
  a range of whole matrices; row and column statistics are each tile's own;
* otherwise (a few large matrices) each matrix is cut into the same number of ranges of rows (at
  least 8 rows per tile) or of columns, at most 127 tiles in all; a vector into ranges of its
  elements.

Threads take whole tiles.  A value whose axes include the split ones (*local*: the rows of a
matrix cut by rows) is computed inside its tile.  A reduction over a split axis (the tensor-wide
RMS, column means of a matrix cut by rows) is summed per tile into a slot of its own, and the
slots are added in tile order between *phases*; the values that follow from it (and any value
not local) are computed once, by one thread, at the start of the next phase.  So such a sum
needs one slot per tile (never per thread), and a result is the same bit for bit on every run
and for any number of threads.  Sums are accumulated in double precision; their
order differs from torch's (which sums in the tensor's dtype), so a reduction matches the
reference path to rounding, not bit for bit.

**Inside a tile**, a phase runs its values by *level* (one more than the input's for a
reduction): at each level, the smaller values (row and column statistics) in loops over their
own axes, values of the same axes in one loop, kept in a buffer only where a later loop reads
them; then, if a reduction needs a full-size value of that level, a pass over the tile's
elements.  Full-size values are recomputed in every pass that needs them and never stored; the
outputs are written in the last pass of the last phase, but for a full output whose old value no
later pass reads and that a later phase reads, or nothing later reads: the first pass that computes
it stores it, and later ones read it back (LAMB's moments: its second pass reads them and the
parameter, not the gradient and the old moments; Prodigy's ``s``, stored by the pass that sums).  Adafactor on a tensor of matrices cut by whole matrices takes two
phases: row and column means, the factored second moment and ``RMS(U)``'s slots in the first, the
update in the second.

**Cases.**  A ``where`` whose condition each tensor knows before its first pass (a test of 0-dim
state, such as MARS's ``is_2d``) splits the code: each case computes only the branches it takes,
so that a vector under MARS makes AdamW's one pass, not the pass for the norm of its matrix branch.

All scratch memory of a call is allocated before anything is written, sized by its largest
tensor; the kernel returns 1 (nothing written) if that fails.  The common conv shapes (3 x 3 and
1 x 1 matrices) get a copy of the code with those sizes as constants that takes a tile's matrices
16 at a time, one per vector lane (:meth:`_Plan._blocks`): each loop over the matrices written out
per matrix as straight-line code (every element of a smaller value read once), the block's
elements copied into and out of small arrays whose lanes are its matrices, its per-matrix sums
and the values no other phase reads kept in the block's own arrays, the others block by block,
and a smaller output that no later phase needs the old value of (Adafactor's row and column
statistics) stored in the phase that computes it.  Other tensors of many tiny matrices keep the
reference path (:func:`suits`).
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any, NamedTuple

import torch

from ._codegen import PREAMBLE, REDUCTIONS, WEAK, Kernel, Unsupported, _Emitter, _indent, _Value

aten = torch.ops.aten

_BITS = {"b": 2, "i": 4, "j": 8}
_SIZES = {"b": "B", "i": "R", "j": "C"}
#: the shapes a non-elementwise rule is traced with
MATRIX, VECTOR = (2, 3, 5), (7,)
_ALIASES = {aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.expand.default}
#: tiles per tensor: at most _TILES, of at least _TILE elements
_TILE, _TILES = 32768, 64
#: (R, C) compiled with constant sizes, for conv kernels
_SPECIAL = ((3, 3), (1, 1))
#: matrices per block (vector lanes) in the code for those sizes
_LANES = 16
#: conditions known per tensor that get code of their own, each doubling the code (:meth:`NestEmitter._switches`)
_SWITCHES = 2


def suits(shape: torch.Size) -> bool:
    """Whether a loop nest is faster than the reference path on a tensor of ``shape``.

    Not on 64 or more matrices that are small (under 24 elements) or have rows under 3 elements,
    other than 3 x 3 and 1 x 1 (which are compiled with constant sizes): there the loops over
    each short row cost more than torch's reductions.  Measured on one core (AMD Zen 5,
    2026-11-30), native over reference step time: (2000, 64, 1) 4.4x, (40000, 5, 1) 4.1x,
    (1000, 64, 2) 1.5x, (16384, 4, 4) 1.1x, (10000, 5, 3) 1.1x, but (4096, 5, 5) 0.50x,
    (1000, 8, 8) 0.91x, (100, 256, 4) 0.43x, (262144, 3, 3) 0.3x.
    """
    if len(shape) < 3:
        return True
    rows, columns = shape[-2], shape[-1]
    matrices = math.prod(shape[:-2])
    return matrices < 64 or (rows, columns) in _SPECIAL or (rows * columns >= 24 and columns >= 3)


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


def loops(mask: int, body: list[str], tile: bool = False) -> list[str]:
    """``body`` inside a loop over each axis of ``mask``: all of it, or the tile's range (``b0``..``b1``)."""
    lines = list(body)
    for a in reversed(_axes(mask)):
        lo, hi = (f"{a}0", f"{a}1") if tile else ("0", _SIZES[a])
        lines = [f"for (int64_t {a} = {lo}; {a} < {hi}; ++{a}) {{", *("    " + x for x in lines), "}"]
    return lines


class NestEmitter(_Emitter):
    """Translates a traced rule that reduces into tiled loop nests (see the module docstring)."""

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
        self.order: list[torch.fx.Node] = []  # values below weak, in graph order
        self.defs: dict[torch.fx.Node, str] = {}  # value -> its C expression
        self.deps: dict[torch.fx.Node, list[torch.fx.Node]] = {}  # value -> the values and inputs it reads
        self.origin: dict[torch.fx.Node, torch.fx.Node] = {}  # alias -> what it aliases
        self.reductions: dict[torch.fx.Node, tuple[torch.fx.Node, int, str, str]] = {}  # (input, out, count, acc)
        self.inputs: dict[str, tuple[int, int]] = {}  # input symbol -> (array number, mask)

    # -- the graph ------------------------------------------------------------------------------
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

    def _source_of(self, node: torch.fx.Node) -> torch.fx.Node:
        return self.origin.get(node, node)

    def _reads(self, node: torch.fx.Node) -> list[torch.fx.Node]:
        """The inputs of ``node`` that are arrays or computed values (not numbers, not 0-dim state)."""
        found = []
        for a in node.all_input_nodes:
            a = self._source_of(a)
            v = self.values[a]
            if v.cls != WEAK and (a in self.defs or v.name in self.inputs) and a not in found:
                found.append(a)
        return found

    def define(self, node: torch.fx.Node, cls: int, ctype: str, expr: str) -> None:
        if cls == WEAK:
            super().define(node, cls, ctype, expr)
            return
        if cls != self.mask(node.meta["val"].shape):
            raise Unsupported(f"{node.target}: broadcast to an unexpected shape")
        self.values[node] = _Value(cls, ctype, f"v{len(self.values)}")
        self.defs[node] = expr
        self.deps[node] = self._reads(node)
        self.order.append(node)

    def call(self, node: torch.fx.Node) -> None:
        if node.target in _ALIASES:
            self.origin[node] = self._source_of(node.args[0])
            self.values[node] = self.values[node.args[0]]
        elif node.target in REDUCTIONS:
            self.reduce(node)
        else:
            super().call(node)

    def reduce(self, node: torch.fx.Node) -> None:
        x = self._source_of(node.args[0])
        src = self.values[x]
        if src.cls == WEAK or node.kwargs.get("dtype") is not None:
            raise Unsupported(f"{node.target} of a number or with a dtype")
        out = self.mask(node.meta["val"].shape)
        reduced = src.cls & ~out
        if not reduced & ~1:
            raise Unsupported(f"{node.target} over no axis")
        count = "1" if node.target in (aten.sum.dim_IntList, aten.sum.default) else f"(double)({size(reduced | 1)})"
        acc = f"acc{len(self.values)}"
        self.reductions[node] = (x, out, count, acc)
        self.values[node] = _Value(out, self.T, f"v{len(self.values)}")
        self.defs[node] = f"({self.T})({acc}[{index(out)}] / {count})"
        self.deps[node] = [x]
        self.order.append(node)

    def array_input(self, name: str) -> _Value:
        k = self.vector.index(name)
        self.inputs[f"in_{k}"] = (k, self.mask(self.shapes[name]))
        return _Value(self.inputs[f"in_{k}"][1], self.T, f"in_{k}")

    # -- the kernel -----------------------------------------------------------------------------
    def _source(self, results: list[Any]) -> Kernel:
        outputs = {}
        for k, v in zip(["param", *self.keys], results):
            if isinstance(v, torch.fx.Node) and not self.unchanged(k, self._source_of(v)):
                outputs[k] = self._source_of(v)
        # a vector is one row: cut into ranges of its elements; matrices by any of the three ways
        splits = [("j", _BITS["j"])] if self.full == 1 | _BITS["j"] else [(a, 2 | _BITS[a]) for a in "bij"]
        switches = self._switches()
        cases = [self._case(switches, number, outputs) for number in range(1 << len(switches))] if switches else [self]
        T = self.T
        pointers = [f"{T} *restrict a{k} = ({T} *)vec[{k} * n + t];" for k in range(len(self.vector))]
        scalars = [f"{T} **s{j} = ({T} **)sca + {j} * n;" for j in range(len(self.scalar))]
        shared = [f"{self.values[n].ctype} {self.values[n].name}_s = 0;" for n in self.order if self.values[n].cls == 1]
        sizing, modes = [], []
        for number, (axis, split) in enumerate(splits):
            test = "if" if number == 0 else "} else if"
            plans = [_Plan(case, split & self.full, outputs) for case in cases]
            needs = [
                " + ".join(f"OM_ROUND(sizeof({ct}) * (size_t)({count}))" for _, ct, count in plan.arena) or "0"
                for plan in plans
            ]
            sizing += [f"{test} (mode == '{axis}') {{", f"    need = {needs[0]};"]
            # the scratch of whichever case a tensor takes
            sizing += [f"    need = need > ({need}) ? need : ({need});" for need in needs[1:]]
            modes.append(f"{test} (mode == '{axis}') {{")
            if switches:
                for c, plan in enumerate(plans):
                    modes.append(f"    {'if' if c == 0 else '} else if'} (om_case == {c}) {{")
                    modes += ["        " + x for x in plan.code()]
                modes.append("    }")
            else:
                modes += ["    " + x for x in plans[0].code()]
        sizing.append("}")
        modes.append("}")
        if switches:
            modes[:0] = self._switch_code(switches)
        planning = _PLAN_VECTOR if len(splits) == 1 else _PLAN_MATRIX
        source = _NEST.format(
            preamble=PREAMBLE, T=T, scalars=_indent(scalars, 4), once=_indent(self.once, 4), tile=_TILE,
            tiles=_TILES, plan=_indent(planning.splitlines(), 8), plan2=_indent(planning.splitlines(), 12),
            sizing=_indent(sizing, 8),
            shared=_indent(shared, 4), pointers=_indent(pointers, 12), modes=_indent(modes, 12),
        )  # fmt: skip
        axes = tuple("".join(_axes(self.mask(self.shapes[k]))) for k in self.vector)
        return Kernel(source, tuple(self.vector), tuple(self.scalar), tuple(self.hyper), dims=True, axes=axes)

    # -- per-tensor cases -------------------------------------------------------------------------
    def _switches(self) -> list[torch.fx.Node]:
        """The conditions of ``where`` that each tensor knows before its first pass (a test of 0-dim
        state, not of a sum: whether MARS's tensor is a matrix), at most :data:`_SWITCHES`.

        Each combination of them gets its own code (:meth:`_case`), in which only the branches taken
        are computed: a tensor that does not take MARS's branch does not make its pass over the data
        for the norm that only that branch reads, nor compute that branch element by element."""
        found: list[torch.fx.Node] = []
        for n in self.order:
            if n.target is not aten.where.self or not isinstance(n.args[0], torch.fx.Node):
                continue
            c = self._source_of(n.args[0])
            if (
                self.values[c].cls == 1
                and c not in found
                and not any(d in self.reductions for d in self._upstream([c]))
            ):
                found.append(c)
        return found[:_SWITCHES]

    def _upstream(self, roots: list[torch.fx.Node]) -> set[torch.fx.Node]:
        """``roots`` and every computed value they read, directly or not."""
        seen: set[torch.fx.Node] = set()
        todo = [r for r in roots if r in self.defs]
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo += [d for d in self.deps[n] if d in self.defs]
        return seen

    def _case(self, switches: list[torch.fx.Node], number: int, outputs: dict[str, torch.fx.Node]) -> NestEmitter:
        """This emitter as seen by a tensor whose ``switches`` hold as the bits of ``number`` say:
        each ``where`` on one of them reads only its branch taken, and what no output needs any more
        is left out (its passes and sums with it)."""
        case = copy.copy(self)
        case.defs, case.deps = dict(self.defs), dict(self.deps)
        holds = {c: bool(number >> k & 1) for k, c in enumerate(switches)}
        for n in self.order:
            if n.target is aten.where.self and isinstance(n.args[0], torch.fx.Node):
                c = self._source_of(n.args[0])
                if c in holds:
                    taken = n.args[1] if holds[c] else n.args[2]
                    case.defs[n] = self.operand(taken, self.values[n].ctype)
                    taken_node = self._source_of(taken) if isinstance(taken, torch.fx.Node) else None
                    case.deps[n] = [taken_node] if taken_node is not None and taken_node in self._reads(n) else []
        live = case._upstream(list(outputs.values()))
        case.order = [n for n in self.order if n in live]
        case.reductions = {r: v for r, v in self.reductions.items() if r in live}
        return case

    def _switch_code(self, switches: list[torch.fx.Node]) -> list[str]:
        """``om_case``: the number of this tensor's case, from the values the switches are made of."""
        lines, upstream = [], self._upstream(switches)
        for n in self.order:
            if n in upstream:
                lines.append(f"const {self.values[n].ctype} {self.values[n].name} = {self.defs[n]};")
        number = " + ".join(f"{1 << k} * ({self.values[c].name} != 0)" for k, c in enumerate(switches))
        return ["int om_case;", "{", *("    " + x for x in lines), f"    om_case = {number};", "}"]


class _Plan:
    """Where each value of a kernel is computed when tensors are cut along the axes ``split``."""

    def __init__(self, em: NestEmitter, split: int, outputs: dict[str, torch.fx.Node]) -> None:
        self.em, self.split, self.outputs = em, split, outputs
        # full array (2 k, or 2 k + 1 written) -> its lane tile, while _blocks makes a block's loops
        self.tiles: dict[int, str] | None = None
        self.in_block: set[str] = set()  # scratch arrays of a block's own (in _blocks)
        self.T = em.T
        self.phase: dict[torch.fx.Node, int] = {}
        self.level: dict[Any, int] = {}
        for n in em.order:
            deps = em.deps[n]
            ph = max((self.phase.get(d, 0) for d in deps), default=0)
            if n in em.reductions:
                x, out = em.reductions[n][:2]
                if self.local(x) and not self.local_mask(out):
                    ph += 1  # summed in slots per tile, added between phases
            self.phase[n] = ph
        self.phases = max([0, *self.phase.values()]) + 1
        self._levels()
        self._schedule()

    # -- classification -------------------------------------------------------------------------
    def mask(self, n: torch.fx.Node) -> int:
        return self.em.values[n].cls

    def local_mask(self, m: int) -> bool:
        return m & self.split == self.split

    def local(self, n: torch.fx.Node) -> bool:
        return self.local_mask(self.mask(n))

    def is_input(self, n: torch.fx.Node) -> bool:
        return n not in self.em.defs

    def full(self, n: torch.fx.Node) -> bool:
        return self.mask(n) == self.em.full

    def stage(self, n: torch.fx.Node) -> bool:
        """A computed value of a tile, smaller than full size."""
        return not self.is_input(n) and self.local(n) and not self.full(n)

    def _levels(self) -> None:
        em = self.em
        for n in em.order:
            if not self.local(n):
                continue
            own = [self.level.get(d, 0) for d in em.deps[n] if self.phase.get(d, 0) == self.phase[n]]
            if n in em.reductions:  # a local sum of a local value: ready one level after it
                self.level[n] = self.level.get(em.reductions[n][0], 0) + 1
            else:
                self.level[n] = max(own, default=0)
        for r, (x, *_) in em.reductions.items():
            if self.local(x):
                self.level["acc", r] = self.level.get(x, 0) if not self.is_input(x) else 0

    def _schedule(self) -> None:
        em = self.em
        # passes: (phase, level) -> sums of full values; the outputs' pass is the last of the last phase
        self.passes: dict[tuple[int, int], list[torch.fx.Node]] = {}
        self.tile_sums: list[torch.fx.Node] = []  # sums accumulated in tiles (stage or pass)
        for r, (x, *_) in em.reductions.items():
            if self.local(x):
                self.tile_sums.append(r)
                if self.full(x):
                    self.passes.setdefault((self.phase.get(x, 0), self.level["acc", r]), []).append(r)
        last = self.phases - 1
        self.full_outputs = {k: v for k, v in self.outputs.items() if em.mask(em.shapes[k]) == em.full}
        out_level = max(
            [lvl for (ph, lvl) in self.passes if ph == last]
            + [self.level.get(v, 0) for v in self.full_outputs.values() if self.phase.get(v, 0) == last],
            default=0,
        )
        self.out_pass = (last, out_level) if self.full_outputs else None
        if self.out_pass:
            self.passes.setdefault(self.out_pass, [])
        # values each pass evaluates at every element, and the full outputs it stores
        self.stores: dict[tuple[int, int], dict[str, torch.fx.Node]] = {}
        self.stored: dict[torch.fx.Node, int] = {}  # full output stored before the last pass -> its array
        self.pass_nodes = self._pass_closures({})
        self._store_early()
        # stage values as late as their readers allow, so that values of the same axes share a loop
        users: dict[Any, list[Any]] = {}
        for n in em.order:
            if self.stage(n) or (self.full(n) and not self.is_input(n)):
                for d in self._item_deps(n):
                    users.setdefault(d, []).append(n)
        for r in self.tile_sums:
            if not self.full(em.reductions[r][0]):
                users.setdefault(em.reductions[r][0], []).append(("acc", r))
        self.sched: dict[Any, int] = {}
        items = [n for n in em.order if self.stage(n)] + [
            ("acc", r) for r in self.tile_sums if not self.full(em.reductions[r][0])
        ]
        position = {n: k for k, n in enumerate(em.order)}

        def pos(item: Any) -> float:
            return position[item[1]] - 0.5 if isinstance(item, tuple) else position[item]

        items.sort(key=pos)
        for item in reversed(items):
            node = item[1] if isinstance(item, tuple) else item
            ph = self.phase.get(em.reductions[node][0], 0) if isinstance(item, tuple) else self.phase[node]
            bounds = []
            if isinstance(item, tuple):  # a sum accumulated in a stage loop: a level before its result
                bounds = [self.sched[node] - 1] if node in self.sched else []
            else:
                for u in users.get(node, []):
                    if isinstance(u, tuple):
                        bounds.append(self.sched[u])
                    elif self.phase[u] != ph:
                        continue
                    elif u in self.sched:
                        bounds.append(self.sched[u])
                    elif self.full(u):
                        bounds += [lv for (p, lv), ns in self.pass_nodes.items() if p == ph and u in ns]
            self.sched[item] = max(min(bounds, default=self.level[item]), self.level[item])
        # stage loops: per (phase, level), items grouped by axes without breaking dependencies
        self.groups: dict[tuple[int, int], list[list[Any]]] = {}
        for ph in range(self.phases):
            for lvl in sorted({lv for it, lv in self.sched.items() if self._item_phase(it) == ph}):
                todo = [it for it in items if self.sched[it] == lvl and self._item_phase(it) == ph]
                self.groups[ph, lvl] = self._group(todo)
        # values read outside their own loop are kept in buffers
        home: dict[Any, tuple[int, int, int]] = {}
        for key, gs in self.groups.items():
            for g_number, g in enumerate(gs):
                for it in g:
                    home[it] = (*key, g_number)
        self.buffered: set[torch.fx.Node] = set()
        for n in em.order:
            if not self.local(n) and self.mask(n) != 1:
                self.buffered.add(n)
        for it, h in home.items():
            self.buffered.update(d for d in self._item_deps(it) if d in home and home[d] != h)
        for nodes in self.pass_nodes.values():
            for n in nodes:
                self.buffered.update(d for d in self._item_deps(n) if self.stage(d))
        self.buffered.update(v for v in self.outputs.values() if self.stage(v))
        # values read by a later phase (outputs: stored in the last; full values: computed again in
        # each pass that needs them); the others are read only in their own phase
        self.early = self._early()
        self.crossing = {
            v
            for k, v in self.outputs.items()
            if self.stage(v) and self.phase[v] != self.phases - 1 and k not in self.early
        }
        for n in em.order:
            if self.stage(n) and any(self.phase[u] != self.phase[n] for u in users.get(n, []) if u in self.phase):
                self.crossing.add(n)
        for (ph, _), nodes in self.pass_nodes.items():
            self.crossing.update(d for n in nodes for d in self._item_deps(n) if self.stage(d) and self.phase[d] != ph)
        self.buffered |= self.crossing
        self.arena = self._arena()

    def _early(self) -> dict[str, torch.fx.Node]:
        """Outputs smaller than full size that :meth:`_blocks` stores in the phase that computes them
        (Adafactor's row and column statistics), not kept until the last: no later phase reads
        the state they replace."""
        em, last = self.em, self.phases - 1
        read: dict[str, int] = {}  # input symbol -> the last phase that reads it
        for n in em.order:
            if n in em.reductions:
                phases = [self.phase.get(em.reductions[n][0], 0)]
            elif self.full(n):  # computed in each pass that needs it
                phases = [p for (p, _), nodes in self.pass_nodes.items() if n in nodes] or [self.phase[n]]
            else:
                phases = [self.phase[n]]
            for d in em.deps[n]:
                if self.is_input(d):
                    read[em.values[d].name] = max(read.get(em.values[d].name, 0), *phases)
        early = {}
        for k, v in self.outputs.items():
            m = em.mask(em.shapes[k])
            symbol = f"in_{em.vector.index(k)}" if k in em.vector else None
            if m in (em.full, 1) or not self.local_mask(m) or not self.stage(v) or self.phase[v] == last:
                continue
            if symbol is not None and read.get(symbol, 0) <= self.phase[v]:
                early[k] = v
        return early

    def _item_phase(self, item: Any) -> int:
        if isinstance(item, tuple):
            return self.phase.get(self.em.reductions[item[1]][0], 0)
        return self.phase[item]

    def _item_deps(self, item: Any) -> list[torch.fx.Node]:
        """What a statement reads: a sum, its input; a sum's result, its accumulator only."""
        if isinstance(item, tuple):
            return [self.em.reductions[item[1]][0]]
        return [] if item in self.em.reductions else self.em.deps[item]

    def _item_mask(self, item: Any) -> int:
        return self.mask(self.em.reductions[item[1]][0]) if isinstance(item, tuple) else self.mask(item)

    def _group(self, todo: list[Any]) -> list[list[Any]]:
        """``todo`` in an order that respects dependencies, cut into runs of the same axes."""
        groups: list[list[Any]] = []
        done: set[Any] = set()
        pending = list(todo)
        members = set(todo)
        current = None
        while pending:
            ready = [it for it in pending if all(d in done or d not in members for d in self._item_deps(it))]
            same = [it for it in ready if self._item_mask(it) == current]
            it = (same or ready)[0]
            if self._item_mask(it) != current or not groups:
                current = self._item_mask(it)
                groups.append([])
            groups[-1].append(it)
            pending.remove(it)
            done.add(it)
        return groups

    def _pass_closures(self, early: dict[str, tuple[int, int]]) -> dict[tuple[int, int], list[torch.fx.Node]]:
        """The values each pass computes per element, with the full outputs ``early`` (name -> pass)
        stored by the pass given and read back after it; :attr:`stores` set to match."""
        em, nodes = self.em, {}
        self.stores = {key: {} for key in self.passes}
        for k, v in self.full_outputs.items():
            self.stores[early.get(k, self.out_pass)][k] = v  # type: ignore[index]
        for key, sums in self.passes.items():
            roots = [em.reductions[r][0] for r in sums] + list(self.stores[key].values())
            nodes[key] = self._closure(roots, {self.full_outputs[k] for k, at in early.items() if at < key})
        return nodes

    def _store_early(self) -> None:
        """Full outputs stored by the first pass that computes them, where no pass after it reads the
        old value they replace and every pass that reads them is of a later phase (which reads them back
        instead of computing them again): LAMB's moments, so that its second pass reads them and the
        parameter, not the gradient too (a sum of the whole tensor must come between its passes); an
        output no later pass reads, such as Prodigy's ``s`` beside its sums, so that no pass is made for
        it alone."""
        em = self.em
        keys = sorted(self.passes)
        early = {}
        for k, v in self.full_outputs.items():
            at = next((key for key in keys if v in self.pass_nodes[key]), None)
            if at is not None and self.out_pass is not None and at[0] < self.out_pass[0] and not self.is_input(v):
                early[k] = at
        while early:
            nodes = self._pass_closures(early)
            reads = {
                key: {d for n in nodes[key] for d in em.deps[n]}
                | {em.reductions[r][0] for r in self.passes[key]}
                | set(self.stores[key].values())
                for key in keys
            }
            old = {n: em.values[n].name for n in em.values if self.is_input(n) and self.full(n)}
            keep = {}
            for k, at in early.items():
                v, symbol = self.full_outputs[k], f"in_{em.vector.index(k)}"
                readers = [key for key in keys if key > at and v in reads[key]]
                overwritten = any(old.get(d) == symbol for key in keys if key > at for d in reads[key])
                if all(key[0] > at[0] for key in readers) and not overwritten:
                    keep[k] = at
            if keep == early:
                break
            early = keep
        self.pass_nodes = self._pass_closures(early)
        self.stored = {self.full_outputs[k]: em.vector.index(k) for k in early}
        out = self.out_pass
        if out is not None and not self.passes[out] and not self.stores[out]:
            # every full output was stored early (Prodigy's s beside its sums): no pass left to make
            for table in (self.passes, self.stores, self.pass_nodes):
                del table[out]

    def _closure(self, roots: list[Any], leaves: set[torch.fx.Node] | None = None) -> list[torch.fx.Node]:
        """The full-size values ``roots`` depend on (recomputed per element, but for ``leaves``,
        read back from the arrays they were stored in), in graph order."""
        needed: set[torch.fx.Node] = set()
        todo = [r for r in roots if isinstance(r, torch.fx.Node)]
        while todo:
            n = todo.pop()
            if n not in needed and not self.is_input(n) and self.full(n) and n not in (leaves or ()):
                needed.add(n)
                todo.extend(self.em.deps[n])
        return [n for n in self.em.order if n in needed]

    def _arena(self) -> list[tuple[str, str, str]]:
        """Scratch arrays: (name, C type, element count), all carved from one allocation."""
        em, arena = self.em, []
        for n in em.order:
            if n in self.buffered:
                arena.append((f"{em.values[n].name}_b", em.values[n].ctype, self._count(self.mask(n))))
        for r, (x, out, _, acc) in em.reductions.items():
            arena.append((acc, "double", self._count(out)))
            if self.partial(r):
                arena.append((f"q{acc}", "double", f"tiles * ({size(out & ~_BITS['b'])})"))
        return arena

    def partial(self, r: torch.fx.Node) -> bool:
        """Whether sum ``r`` adds slots per tile (its input is local, its result not)."""
        x, out = self.em.reductions[r][:2]
        return self.local(x) and not self.local_mask(out)

    # -- code -----------------------------------------------------------------------------------
    def code(self) -> list[str]:
        """The code for one tensor: carve the arena, then the phases (module docstring)."""
        body = ["char *om_at = om_arena;"]
        for name, ctype, count in self.arena:
            body += [f"{ctype} *{name} = ({ctype} *)om_at;", f"om_at += OM_ROUND(sizeof({ctype}) * (size_t)({count}));"]
        body.append("(void)om_at;")
        if self.split == _BITS["b"]:
            variants = []
            for r, c in _SPECIAL:
                variants += [f"if (R == {r} && C == {c}) {{", f"    const int64_t R = {r}, C = {c};"]
                variants += ["    " + x for x in self._phases(across=(r, c))]
                variants.append("} else")
            return body + variants + ["{", *("    " + x for x in self._phases(across=None)), "}"]
        return body + self._phases(across=None)

    def _phases(self, across: tuple[int, int] | None) -> list[str]:
        em = self.em
        lines: list[str] = []
        for ph in range(self.phases):
            serial = self._serial(ph)
            if serial:
                lines += ["#pragma omp single", "{", *("    " + x for x in self._copies(ph) + serial), "}"]
            tile = self._copies(ph + 1) + self._tile_ranges()
            idle = len(tile)
            for r in self.tile_sums:
                x, out, _, acc = em.reductions[r]
                if self.phase.get(x, 0) != ph:
                    continue
                if self.partial(r):
                    part = size(out & ~_BITS["b"])
                    tile += [f"double *p{acc} = q{acc} + k * ({part});", f"for (int64_t q = 0; q < {part}; ++q)"]
                    tile.append(f"    p{acc}[q] = 0;")
                elif not across:
                    tile += loops(out, [f"{acc}[{index(out)}] = 0;"], tile=True)
            if across:
                tile += self._blocks(ph, across)
            else:
                for lvl in sorted({lv for (p, lv) in [*self.groups, *self.passes] if p == ph}):
                    for g in self.groups.get((ph, lvl), []):
                        tile += self._stage_loop(g)
                    if (ph, lvl) in self.passes:
                        first, loop, last = self._pass(ph, lvl, None)
                        tile += first + loop + last
                if ph == self.phases - 1:
                    for k, v in self.outputs.items():
                        m = em.mask(em.shapes[k])
                        if m != em.full and m != 1 and self.local_mask(m):
                            tile += loops(m, self._store(k, v, m), tile=True)
            if len(tile) == idle:  # nothing per tile in this phase: its numbers only (above)
                continue
            lines += ["#pragma omp for schedule(static)", "for (int64_t k = 0; k < tiles; ++k) {"]
            lines += ["    " + x for x in tile] + ["}"]
        final = []
        for k, v in self.outputs.items():
            m = em.mask(em.shapes[k])
            if k in em.scalar:
                final.append(f"s{em.scalar.index(k)}[t][0] = {em.operand(v, self.T)};")
            elif m != em.full and not self.local_mask(m):
                final += loops(m, self._store(k, v, m))
        if final:
            lines += ["#pragma omp single", "{", *("    " + x for x in self._copies(self.phases) + final), "}"]
        return lines

    def _copies(self, ph: int) -> list[str]:
        """Private copies of the tensor-wide numbers of phases before ``ph`` (a loop that reads a
        shared variable could not be vectorised: a store might change it)."""
        em = self.em
        return [
            f"const {em.values[n].ctype} {em.values[n].name} = {em.values[n].name}_s;"
            for n in em.order
            if em.values[n].cls == 1 and self.phase[n] < ph
        ]

    def _tile_ranges(self) -> list[str]:
        lines = ["int64_t b0 = 0, b1 = B, i0 = 0, i1 = R, j0 = 0, j1 = C;"]
        if self.split & _BITS["i"] or self.split & _BITS["j"]:
            axis = "i" if self.split & _BITS["i"] else "j"
            n = _SIZES[axis]
            lines += [
                "b0 = k / P, b1 = b0 + 1;",
                f"{axis}0 = k % P * {n} / P, {axis}1 = (k % P + 1) * {n} / P;",
            ]
        else:
            lines.append("b0 = k * B / tiles, b1 = (k + 1) * B / tiles;")
        lines.append("(void)b0, (void)b1, (void)i0, (void)i1, (void)j0, (void)j1;")
        return lines

    def _load(self, d: torch.fx.Node) -> list[str]:
        """The statement that makes input or value ``d`` readable by name in a loop body."""
        em, v = self.em, self.em.values[d]
        if self.is_input(d):
            k, m = em.inputs[v.name]
            place = self._full(k, "x") if m == em.full else f"a{k}[{index(m)}]"
            return [f"const {self.T} {v.name} = {place};"]
        if d in self.stored:  # a full output stored by an earlier phase
            return [f"const {self.T} {v.name} = {self._full(self.stored[d], 'x')};"]
        if d in self.buffered:
            return [f"const {v.ctype} {v.name} = {v.name}_b[{self._place(v.cls, f'{v.name}_b')}];"]
        return []  # a shared variable

    def _place(self, mask: int, name: str) -> str:
        """Where the value of scratch array ``name`` of axes ``mask`` is for the current (b, i, j): at
        its index, or, in :meth:`_blocks`, by blocks: a block's values of each (i, j) side by side,
        in the block's own small array where no other phase reads them (:attr:`in_block`)."""
        if self.tiles is None or not mask & _BITS["b"]:
            return index(mask)
        rest = mask & ~_BITS["b"]
        start = "" if name in self.in_block else f"{self._block(rest)} + "
        return f"{start}({index(rest)}) * {_LANES} + l"

    @staticmethod
    def _block(rest: int) -> str:
        """Where the block's values start: each tile ``k`` gets room for one more block, so that a
        tile's last block, however short, ends before the next tile's first."""
        return f"(bb + k * {_LANES}) * ({size(rest)})"

    def _count(self, mask: int) -> str:
        """Elements of a scratch array of axes ``mask`` (with that room when cut by whole matrices)."""
        if self.split == _BITS["b"] and mask & _BITS["b"]:
            return f"(B + tiles * {_LANES}) * ({size(mask & ~_BITS['b'])})"
        return size(mask)

    def _full(self, k: int, tile: str) -> str:
        """Element (b, i, j) of full array ``k``: in the array, or in its lane tile (``x``: read,
        ``y``: written) while :meth:`_blocks` makes a block's loops."""
        if self.tiles is None:
            return f"a{k}[{index(self.em.full)}]"
        self.tiles.setdefault(k * 2 + (tile == "y"), f"{tile}{k}")
        return f"{tile}{k}[({index(self.em.full & ~_BITS['b'])}) * {_LANES} + l]"

    def _body(self, items: list[Any], inside: set[Any]) -> list[str]:
        """Loads of what ``items`` read from outside, then their statements."""
        loads: list[str] = []
        seen: set[torch.fx.Node] = set()
        for it in items:
            for d in self._item_deps(it):
                if d not in inside and d not in seen:
                    seen.add(d)
                    loads += self._load(d)
        lines = []
        for it in items:
            if isinstance(it, tuple):
                lines.append(self._accumulate(it[1], f"(double){self.em.values[self.em.reductions[it[1]][0]].name}"))
                continue
            v = self.em.values[it]
            expr = self.em.defs[it]
            if it in self.em.reductions and self.tiles is not None:
                # a block's counts are constants: a product by the reciprocal, which rounds to the
                # same number as the quotient but for one last bit of a double (a division by a
                # vector costs ~10 times as much)
                _, out, count, acc = self.em.reductions[it]
                expr = f"({self.T})({acc}[{self._place(out, acc)}] * (1.0 / {count}))"
            lines.append(f"const {v.ctype} {v.name} = {expr};")
            if it in self.buffered:
                lines.append(f"{v.name}_b[{self._place(v.cls, f'{v.name}_b')}] = {v.name};")
        return loads + lines

    def _accumulate(self, r: torch.fx.Node, term: str) -> str:
        _, out, _, acc = self.em.reductions[r]
        if self.partial(r):
            return f"p{acc}[{index(out & ~_BITS['b'])}] += {term};"
        return f"{acc}[{self._place(out, acc)}] += {term};"

    def _stage_loop(self, group: list[Any]) -> list[str]:
        return loops(self._item_mask(group[0]), self._body(group, set(group)), tile=True)

    def _blocks(self, ph: int, across: tuple[int, int]) -> list[str]:
        """Phase ``ph`` of a tile of matrices of ``across`` (rows, columns), ``_LANES`` matrices at
        a time: each loop of the phase runs over the block's matrices, one per vector lane, its
        rows and columns written out (:func:`_straight`); the block's per-matrix values and sums
        lie side by side for each (i, j) (:meth:`_place`), so that a lane's loads are contiguous.
        The full arrays are copied between the tensor and an array per block whose lanes are its
        matrices: GCC 12 vectorises no loop that reads a group of 9 floats (a 3 x 3 matrix) and
        sums them (it left the first pass scalar: 18-19 ns per 3 x 3 matrix in all), but does this
        copy with shuffles of whole vectors (8-9 ns per matrix; one core, AMD Zen 5, 2026-11-30)."""
        em, lanes = self.em, _LANES
        self.tiles = {}

        # sums per matrix, row or column, and values that no other phase reads: a block's own
        # arrays, which stay in the first-level cache (in the arena, they were written to memory)
        def count(mask: int) -> int:  # elements per matrix, a constant here
            return math.prod(dict(zip("ij", across))[a] for a in _axes(mask) if a != "b")

        own = [
            (acc, "double", count(out))
            for r, (x, out, _, acc) in em.reductions.items()
            if r in self.tile_sums and not self.partial(r) and self.phase.get(x, 0) == ph
        ]
        own += [
            (f"{em.values[n].name}_b", em.values[n].ctype, count(self.mask(n)))
            for n in em.order
            if n in self.buffered and n not in self.crossing and self.stage(n) and self.phase[n] == ph
        ]
        self.in_block = {name for name, _, _ in own}
        before: list[str] = []
        after: list[str] = []
        parts: list[_Lanes] = []
        for lvl in sorted({lv for (p, lv) in [*self.groups, *self.passes] if p == ph}):
            for g in self.groups.get((ph, lvl), []):
                mask = self._item_mask(g[0])
                lines = self._body(g, set(g))
                for axis, count in zip("ij", across):
                    if mask & _BITS[axis]:
                        lines = _unrolled(axis, count, lines)
                sums = [em.reductions[it[1]][1] for it in g if isinstance(it, tuple)]
                # vectorised when no two matrices add into the same slot
                parts.append(_Lanes([] if all(out & _BITS["b"] for out in sums) else None, lines))
            if (ph, lvl) in self.passes:
                first, part, last = self._pass(ph, lvl, across)
                before += first
                parts.append(part)
                after += last
        for k, v in self.outputs.items():
            m = em.mask(em.shapes[k])
            here = self.phase[v] == ph if k in self.early else ph == self.phases - 1
            if here and m != em.full and m != 1 and self.local_mask(m):
                lines = self._store(k, v, m)
                for axis, count in zip("ij", across):
                    if m & _BITS[axis]:
                        lines = _unrolled(axis, count, lines)
                parts.append(_Lanes([], lines))
        # a matrix's sums are each added up in one iteration of one loop: the first term is stored
        slots = {em.reductions[r][3] for r in self.tile_sums if not self.partial(r)}
        # loops that add into no tile sum, one after another, as one: each iteration reads only its
        # own matrix's values (passes stay apart: joined, they were slower)
        loops: list[_Lanes] = []
        for part in parts:
            if loops and part.sums == [] and loops[-1].sums == []:
                loops[-1] = _Lanes([], [*loops[-1].body, "{", *part.body, "}"])
            else:
                loops.append(_Lanes(part.sums, ["{", *part.body, "}"]))
        body: list[str] = []
        for part in loops:
            simd = None if part.sums is None else _simd(part.sums)
            body += _lanes_loop(simd, _first(_straight(part.body), slots))
        elements = across[0] * across[1]
        copies_in, copies_out = [], []
        unordered = self._unordered(ph)
        for key, name in sorted(self.tiles.items()):
            k = key // 2
            lane, element = f"{name}[e * {lanes} + l]", f"a{k}[(bb + l) * {elements} + e]"
            if name.startswith("x") and k in unordered:
                # a full block is read where it lies: its elements go to lanes in another order
                copies_in += [
                    f"_Alignas(64) {self.T} {name}_short[{elements * lanes}];",
                    f"const {self.T} *{name} = a{k} + bb * {elements};",
                    f"if (nl < {lanes}) {{",
                    f"    {name} = {name}_short;",
                    *("    " + x for x in _copy(f"{name}_short[e * {lanes} + l]", element, elements, "nl")),
                    "}",
                ]
                continue
            copies_in.append(f"_Alignas(64) {self.T} {name}[{elements * lanes}];")
            if name.startswith("x"):
                copies_in += _copies(lane, element, elements)
            else:
                copies_out += _copies(element, lane, elements)
        self.tiles, self.in_block = None, set()
        arrays = [f"_Alignas(64) {ctype} {name}[{lanes * n}];" for name, ctype, n in own]
        return [
            *before,
            f"for (int64_t bb = b0; bb < b1; bb += {lanes}) {{",
            f"    const int64_t nl = b1 - bb < {lanes} ? b1 - bb : {lanes};",
            *("    " + x for x in arrays + copies_in + body + copies_out),
            "}",
            *after,
        ]

    def _unordered(self, ph: int) -> set[int]:
        """The full inputs whose values reach, in phase ``ph``, nothing but sums over the whole
        tile (Adafactor's RMS of the parameter in its first phase): any order of their elements
        gives the same sums, so a block of them need not be copied into the lanes' order."""
        em, found = self.em, set()
        nodes = [n for n in em.order if any(p == ph and n in ns for (p, _), ns in self.pass_nodes.items())]
        sums = [r for (p, _), rs in self.passes.items() if p == ph for r in rs]
        stored = [v for (p, _), outputs in self.stores.items() if p == ph for v in outputs.values()]
        for x in {d for n in nodes for d in em.deps[n] if self.is_input(d) and self.full(d)}:
            reach = {x}  # x and the values computed from it in the passes of this phase
            for n in nodes:
                if any(d in reach for d in em.deps[n]):
                    reach.add(n)
            # every value it reaches reads nothing of a matrix's own, and ends in a tile-wide sum
            own = any(d not in reach and em.values[d].cls != 1 for n in reach - {x} for d in em.deps[n])
            ends = [r for r in sums if em.reductions[r][0] in reach]
            if not own and all(em.reductions[r][1] == 1 for r in ends) and not reach & set(stored):
                found.add(em.inputs[em.values[x].name][0])
        return found

    def _pass(self, ph: int, lvl: int, across: tuple[int, int] | None) -> tuple[list[str], Any, list[str]]:
        """A pass over the tile's elements: row by row (``#pragma omp simd`` along a row), or, with
        ``across`` (rows of constant length), over a block's matrices, vectorised where that is safe.
        Returns what goes before the loop (and before the blocks), the loop (across: a :class:`_Lanes`),
        and what goes after."""
        em = self.em
        nodes = self.pass_nodes[ph, lvl]
        inside = set(nodes)
        element = self._body(nodes, inside)
        # a row's sum goes into a register, then into its slot per row, per matrix or per tile
        per: dict[str, list[str]] = {"row": [], "b": [], "tile": []}
        after: dict[str, list[str]] = {"row": [], "b": [], "tile": []}
        columns_apart = True
        for r in self.passes[ph, lvl]:
            x, out, _, acc = em.reductions[r]
            term = f"(double){em.values[x].name}"
            if x not in inside:  # a full input array
                element[:0] = [ln for ln in self._load(x) if ln not in element]
            if out & _BITS["j"]:  # column sums: element by element
                element.append(self._accumulate(r, term))
                columns_apart = columns_apart and bool(out & _BITS["b"])
                continue
            element.append(f"r{acc} += {term};")
            where = "row" if out & _BITS["i"] else "b" if out & _BITS["b"] else "tile"
            per["row"].append(acc)
            if where == "row":
                after["row"].append(self._accumulate(r, f"r{acc}"))
            else:
                per[where].append(acc)
                after["row"].append(f"t{acc} += r{acc};")
                after[where].append(self._accumulate(r, f"t{acc}"))
        for k, v in self.stores[ph, lvl].items():
            if v not in inside:
                element[:0] = [ln for ln in self._load(v) if ln not in element]
            element.append(f"{self._full(em.vector.index(k), 'y')} = {em.operand(v, self.T)};")
        row = [f"double r{a} = 0;" for a in per["row"]]
        if across:
            row += [*_unrolled("j", across[1], element), *after["row"]]
            rows = [*(f"double t{a} = 0;" for a in per["b"]), *_unrolled("i", across[0], row), *after["b"]]
            return (
                [f"double t{a} = 0;" for a in per["tile"]],
                _Lanes(["t" + a for a in per["tile"]] if columns_apart else None, rows),
                after["tile"],
            )
        else:
            # the tile's rows as one range, each row's (b, i) from its number: nested loops over b
            # and i kept GCC 12 from vectorising the row's loop
            row += [_simd(["r" + a for a in per["row"]]), "for (int64_t j = j0; j < j1; ++j) {"]
            row += ["    " + x for x in element] + ["}", *after["row"]]
            for r in self.passes[ph, lvl]:
                acc = em.reductions[r][3]
                if acc in per["b"]:
                    row.append(self._accumulate(r, f"r{acc}"))
            row = [ln for ln in row if not any(ln == f"t{a} += r{a};" for a in per["b"])]
            loop = [
                "for (int64_t row = b0 * R + i0; row < (b1 - 1) * R + i1; ++row) {",
                "    const int64_t b = row / R, i = row % R;",
                "    (void)b, (void)i;",
                *("    " + x for x in row),
                "}",
            ]
        return [f"double t{a} = 0;" for a in per["tile"]], loop, after["tile"]

    def _serial(self, ph: int) -> list[str]:
        """What one thread does at the start of phase ``ph``: add the tiles' slots, then the values
        that are not local."""
        em, lines = self.em, []
        for r in em.order:
            if r in em.reductions and self.partial(r) and self.phase[r] == ph:
                _, out, _, acc = em.reductions[r]
                part = out & ~_BITS["b"]
                b = "0" if self.split == _BITS["b"] else "k / P"
                lines += [f"for (int64_t q = 0; q < {size(out)}; ++q)", f"    {acc}[q] = 0;"]
                lines += ["for (int64_t k = 0; k < tiles; ++k) {", f"    const int64_t b = {b};", "    (void)b;"]
                lines += [
                    "    " + x
                    for x in loops(part, [f"{acc}[{index(out)}] += q{acc}[k * ({size(part)}) + {index(part)}];"])
                ]
                lines.append("}")
        for n in em.order:
            if self.local(n) or self.phase[n] != ph:
                continue
            v = em.values[n]
            if n in em.reductions and not self.partial(n):  # a sum of a value that is not local
                x, out, _, acc = em.reductions[n]
                lines += [f"for (int64_t q = 0; q < {size(out)}; ++q)", f"    {acc}[q] = 0;"]
                lines += loops(
                    em.values[x].cls, [*self._load(x), f"{acc}[{index(out)}] += (double){em.values[x].name};"]
                )
            if v.cls == 1:
                lines += [f"const {v.ctype} {v.name} = {em.defs[n]};", f"{v.name}_s = {v.name};"]
            else:
                lines += loops(v.cls, [*self._body([n], {n})])
        return lines

    def _store(self, k: str, v: torch.fx.Node, m: int) -> list[str]:
        return [*self._load(v), f"a{self.em.vector.index(k)}[{index(m)}] = {self.em.operand(v, self.T)};"]


def _unrolled(axis: str, count: int, body: list[str]) -> list[str]:
    """``body`` once for each value of ``axis`` below ``count``, as a constant."""
    lines = []
    for k in range(count):
        lines += ["{", f"    const int64_t {axis} = {k};", *("    " + x for x in body), "}"]
    return lines


_BIND = re.compile(r"const int64_t ([ij]) = (\d+);")
_DECLARE = re.compile(r"(const )?(\w+) (\w+) = (.*);")
_NAME = re.compile(r"\b[A-Za-z_]\w*\b")
_READ = re.compile(r"\w+\[[^\[\]]*\]")
_WRITE = re.compile(r"(\w+\[[^\[\]]*\]) \+?= ")


def _straight(lines: list[str]) -> list[str]:
    """Blocks from :func:`_unrolled` as straight-line code: ``i`` and ``j`` replaced by their
    constants, each name declared in a block renamed for it, and an element read again from the
    same place (and not written in between) read once: GCC 12 left a loop over matrices scalar
    where it loaded an element of a row or column value once per element of the matrix."""
    out: list[str] = []
    scopes: list[dict[str, str]] = [{}]
    reads: dict[tuple[str, str], str] = {}

    def renamed(text: str) -> str:
        return _NAME.sub(lambda t: scopes[-1].get(t[0], t[0]), text)

    for line in lines:
        text = line.strip()
        if text == "{":
            scopes.append(dict(scopes[-1]))
            continue
        if text == "}":
            scopes.pop()
            continue
        bind = _BIND.fullmatch(text)
        if bind:
            scopes[-1][bind[1]] = bind[2]
            continue
        declare = _DECLARE.fullmatch(text)
        if not declare:
            text = renamed(text)
            written = _WRITE.match(text)
            if written:
                reads = {k: v for k, v in reads.items() if k[1] != written[1]}
            out.append(text)
            continue
        const, ctype, name, expr = declare.groups()
        expr = renamed(expr)
        read = bool(const) and _READ.fullmatch(expr) is not None
        if read and (ctype, expr) in reads:
            scopes[-1][name] = reads[ctype, expr]
            continue
        scopes[-1][name] = f"{name}_{len(out)}"
        if read:
            reads[ctype, expr] = scopes[-1][name]
        out.append(f"{const or ''}{ctype} {scopes[-1][name]} = {expr};")
    return out


class _Lanes(NamedTuple):
    """A loop over a block's matrices: the tile sums it adds to (None: it is not vectorised), its body."""

    sums: list[str] | None
    body: list[str]


_ADD = re.compile(r"(\w+)(\[[^\[\]]*\]) \+= (.*);")


def _first(lines: list[str], slots: set[str]) -> list[str]:
    """``lines`` with the first addition into each element of the arrays ``slots`` made a store."""
    seen, out = set(), []
    for line in lines:
        add = _ADD.fullmatch(line)
        if add and add[1] in slots and (add[1], add[2]) not in seen:
            seen.add((add[1], add[2]))
            line = f"{add[1]}{add[2]} = {add[3]};"
        out.append(line)
    return out


def _lanes_loop(pragma: str | None, body: list[str]) -> list[str]:
    """``body`` for each matrix ``b`` of a block (:meth:`_Plan._blocks`), lane ``l`` of the vectors."""
    head = ["for (int64_t l = 0; l < nl; ++l) {", "    const int64_t b = bb + l;", "    (void)b;"]
    return [*([pragma] if pragma else []), *head, *("    " + x for x in body), "}"]


def _copy(to: str, source: str, elements: int, lanes: Any) -> list[str]:
    """``to = source`` for element ``e`` of lane ``l``, in ``lanes`` lanes."""
    return [
        f"for (int64_t e = 0; e < {elements}; ++e)",
        f"    for (int64_t l = 0; l < {lanes}; ++l)",
        f"        {to} = {source};",
    ]


def _copies(to: str, source: str, elements: int) -> list[str]:
    """:func:`_copy` of a full block with constant bounds (which GCC unrolls into shuffles of
    whole vectors), else of the block's ``nl`` lanes."""
    full, short = _copy(to, source, elements, _LANES), _copy(to, source, elements, "nl")
    return [f"if (nl == {_LANES}) {{", *("    " + x for x in full), "} else {", *("    " + x for x in short), "}"]


def _simd(sums: list[str]) -> str:
    return f"#pragma omp simd reduction(+: {', '.join(sums)})" if sums else "#pragma omp simd"


_PLAN_MATRIX = """\
char mode = 'b';
int64_t P = 1;
if (B > 0 && B < tiles) {
    P = (tiles + B - 1) / B;
    tiles = B * P;
    mode = R >= 8 * P ? 'i' : 'j';
}"""

_PLAN_VECTOR = """\
char mode = 'j';
const int64_t P = tiles;"""

_NEST = """\
/* generated by optimlab.optim._loopnest from an optimizer's update rule */
{preamble}
#include <string.h>
#define OM_ROUND(x) (((x) + 63) & ~(size_t)63)

int optimlab_step(int64_t n, const int64_t *dims, void **vec, void **sca, const double *h, int nthreads)
{{
{scalars}
{once}
    /* scratch for the largest tensor, before anything is written */
    size_t most = 0;
    int64_t total = 0;
    for (int64_t t = 0; t < n; ++t) {{
        const int64_t B = dims[3 * t], R = dims[3 * t + 1], C = dims[3 * t + 2];
        /* tiles depend on the shape only, so the order of every sum does too */
        int64_t tiles = B * R * C / {tile};
        tiles = tiles < 1 ? 1 : tiles > {tiles} ? {tiles} : tiles;
{plan}
        size_t need = 0;
{sizing}
        (void)P;
        most = need > most ? need : most;
        total += B * R * C;
    }}
    char *om_arena = malloc(most ? most : 1);
    if (!om_arena)
        return 1;
{shared}
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && total >= 65536)
#endif
    {{
        for (int64_t t = 0; t < n; ++t) {{
            const int64_t B = dims[3 * t], R = dims[3 * t + 1], C = dims[3 * t + 2];
            int64_t tiles = B * R * C / {tile};
            tiles = tiles < 1 ? 1 : tiles > {tiles} ? {tiles} : tiles;
{plan2}
{pointers}
{modes}
        }}
    }}
    free(om_arena);
    return 0;
}}
"""
