r"""Sophia-G (Liu, Li, Hall, Liang & Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for
Language Model Pre-training", ICLR 2024, arXiv 2305.14342).

Reference: the authors' code (``Liuhong99/Sophia``, ``sophia.py``, commit a7e1572: names, defaults,
state layout, the ``update_hessian()`` / ``step(bs=...)`` API, results), written out as equations in
tests/optim/test_sophia.py. ``sophia-opt`` 0.2.2 on PyPI is a community package of that file (its
module is byte-for-byte the authors' ``sophia.py``; packaged by another author) and is checked as a
second opinion; ``pytorch_optimizer.SophiaH`` (4.1.0) as a third, where it computes the same thing.

**The algorithm** (the paper's Sophia with its Gauss-Newton-Bartlett estimator). With
momentum :math:`m`, a diagonal curvature estimate :math:`h` refreshed every :math:`k` steps, and
:math:`\operatorname{clip}(z, 1) = \max(\min(z, 1), -1)` elementwise:

.. math::

    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
    h_t &= \beta_2 h_{t-k} + (1-\beta_2)\, \hat h_t \ \text{ every } k \text{ steps, else } h_t = h_{t-1} \\
    \theta_t &\leftarrow (1 - \eta_t\lambda)\, \theta_t && \text{(decoupled weight decay)} \\
    \theta_{t+1} &= \theta_t - \eta_t \operatorname{clip}\!\Bigl(\frac{m_t}{\max(\gamma h_t, \epsilon)},\ 1\Bigr)

and the estimator (GNB): for a mini-batch of :math:`B` inputs, draw labels
:math:`\hat y_b` from the model's own softmax :math:`\operatorname{softmax}(f(\theta, x_b))`, take
:math:`\hat g = \nabla_\theta \frac1B \sum_b \ell(f(\theta, x_b), \hat y_b)` and
:math:`\hat h = B\, \hat g \odot \hat g`.

**What the code computes** (and so this class): :math:`h` is the EMA of :math:`\hat g \odot \hat g`
without the factor :math:`B`, which moves into the denominator as ``rho * bs`` (``bs``: the number
of examples, tokens for a language model, behind :math:`\hat g`), and :math:`\epsilon` is added:

.. math::

    \theta &\leftarrow (1 - \alpha\lambda)\, \theta \\
    m &\leftarrow \beta_1 m + (1-\beta_1)\, g \\
    \theta &\leftarrow \theta - \alpha \operatorname{sign}(m)
        \min\Bigl(\frac{|m|}{\rho \cdot \mathit{bs} \cdot h + 10^{-15}},\ 1\Bigr)

with :math:`\alpha` = ``lr``, :math:`\lambda` = ``weight_decay``, :math:`\rho` = ``rho``; every
coordinate moves by at most ``lr``. (The authors' README: the code's ``lr`` is the paper's
:math:`\rho\,\eta_t` up to a reparameterisation, so it is comparable with Lion's, not Adam's.)
:func:`sophiag` is this step; :func:`sophiag_hessian` the estimate's EMA
:math:`h \leftarrow \beta_2 h + (1-\beta_2)\, \hat g \odot \hat g`, which
:meth:`SophiaG.update_hessian` applies to every parameter's ``p.grad``. Until the first
``update_hessian()`` :math:`h = 0` and each step is ``lr * sign(m)``: Sophia starts as signed
momentum.

**``bs``** is reachable both ways: as the authors' ``step(closure=None, bs=5120)`` (a ``bs`` given
to ``step`` applies to every group for that call only, as theirs, and is not stored), and as a
param-group hyperparameter (``SophiaG(params, bs=...)``, a group's own ``"bs"``, the lab's spec
``SophiaG(bs=...)``), which ``step()`` without ``bs`` uses. Its default 5120 is the authors' default
argument, so ``step()`` here and theirs take the same step.

**The training-loop hook.** Every ``k`` steps (the authors use ``k = 10``), after the optimizer step,
the loop refreshes the estimate on a mini-batch with labels drawn from the model itself::

    for step, (x, y) in enumerate(batches):
        F.cross_entropy(model(x), y).backward()
        optimizer.step(bs=tokens_per_batch)      # or SophiaG(..., bs=tokens_per_batch) once
        optimizer.zero_grad(set_to_none=True)
        if step % k == k - 1:
            logits = model(x)                    # a batch, as for the training loss
            y_sampled = torch.distributions.Categorical(logits=logits).sample()
            F.cross_entropy(logits.view(-1, logits.size(-1)), y_sampled.view(-1)).backward()
            optimizer.update_hessian()           # h <- beta2 h + (1 - beta2) p.grad^2
            optimizer.zero_grad(set_to_none=True)

(a mean loss over the batch, so ``p.grad`` is :math:`\hat g`; the authors' loop also clips this
gradient to norm 1 first, as its training gradients.) The lab's runner does this on classification
tasks, every 10 steps (:func:`optimlab.runner.gnb_estimate`). The authors tune ``rho`` so that the share of
coordinates whose step is not clipped (:math:`|m| < \rho \cdot bs \cdot h`, their "win rate") stays
within 0.1-0.5.

Where we differ from the authors' code, on purpose (tests/optim/test_sophia.py shows it):

* Infinite gradients. Theirs turns an infinite :math:`m` into a finite step (``sign`` is 1 and the
  ratio is clipped to 1), the same step at every later step until ``update_hessian()`` sees the
  infinity; here, as in every optimizer of the library, a non-finite :math:`m` reaches the parameter
  as NaN. For finite values the two are the same arithmetic. (A NaN gradient reaches the parameter in
  both.)
* Float16 parameters. There ``1e-15`` rounds to 0, so before the first estimate (:math:`h = 0`) a
  coordinate whose :math:`m` is exactly 0 (a cancellation that float16 makes likely) divides 0 by 0
  and its parameter is NaN from then on. Here a zero denominator is replaced by :math:`|m|` (by 1 where
  :math:`m = 0`): the step is ``lr * sign(m)``, what the ``1e-15`` gives in wider types. In float32,
  float64 and bfloat16 the denominator is never 0 and the arithmetic is theirs.
* ``capturable=True`` is refused, as by every optimizer here; ``False`` is their default.

Their state (``step``, ``exp_avg``, ``hessian``) is ours, so their checkpoints load as they are.

``pytorch_optimizer.SophiaH`` (4.1.0) is Sophia with the *Hutchinson* estimator instead:
:math:`\hat h = u \odot (\nabla^2 L\, u)` for a random :math:`u`, computed inside ``step()`` every
``update_period`` steps from a ``backward(create_graph=True)`` graph (or taken from
``step(hessian=...)``), a different quantity from GNB's :math:`B\, \hat g \odot \hat g`. The rest is
the same rule under other names: its ``lr * clip(m / max(h, eps), p)`` is ours with our ``lr`` its
``lr * p``, ``rho * bs = p`` and our ``weight_decay`` its ``weight_decay / p``; given the same estimate, it takes our
steps (the tests check this). Its defaults differ (``lr=6e-2``, ``betas=(0.96, 0.99)``, no weight
decay), and it refreshes :math:`h` at the step that uses it (steps 1, k+1, ...), not after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State, _value
from ._math import is_zero
from ._tensorlist import TensorList
from ._validate import check_betas, check_range

#: the authors' default ``bs`` (their ``step(bs=5120)``): the examples (tokens) behind one estimate
DEFAULT_BS = 5120


def sophiag(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    lr: Any,
    beta1: Any,
    rho: Any,
    bs: Any = DEFAULT_BS,
    weight_decay: Any = 0.0,
) -> tuple[Tensor, State]:
    """One Sophia-G step (the module docstring has the equations); returns the new param and state.

    ``state["hessian"]`` is read, never written here: :func:`sophiag_hessian` updates it.
    """
    del step  # no bias correction, no schedule
    if not is_zero(weight_decay):
        param = param * (1 - lr * weight_decay)
    m = beta1 * state["exp_avg"] + (1 - beta1) * grad
    size = m.abs()
    denominator = rho * bs * state["hessian"] + 1e-15
    # float16 rounds 1e-15 to 0, and then 0 / 0 where m = 0 and h = 0 would make the parameter NaN for
    # good: where the denominator is 0, divide by |m| instead (by 1 where m = 0), so that the step is
    # lr * sign(m), as 1e-15 makes it in wider types.  Elsewhere this adds an exact 0.
    denominator = denominator + (1 - denominator.sign()) * (size + (1 - size.sign()))
    ratio = (size / denominator).clamp(max=1)
    # m - m is 0 for finite m and NaN otherwise: sign(inf) * min(inf, 1) alone is a finite step
    return param - lr * (m.sign() * ratio + (m - m)), {"exp_avg": m}


def sophiag_hessian(hessian: Tensor, grad: Tensor, *, beta2: Any) -> Tensor:
    """The curvature estimate's EMA, :math:`h \\leftarrow \\beta_2 h + (1-\\beta_2)\\, \\hat g \\odot \\hat g`."""
    return beta2 * hessian + (1 - beta2) * grad * grad


class SophiaG(RuleOptimizer):
    """Sophia-G: momentum divided by a diagonal Gauss-Newton estimate, each coordinate's step clipped at ``lr``.

    Same constructor, defaults and state (``step``, ``exp_avg``, ``hessian``) as the authors'
    ``SophiaG``, so their state_dict loads as it is, and the same API: ``step(closure=None, bs=None)``
    and :meth:`update_hessian`, which the training loop calls every ``k`` steps after a backward
    pass of the loss on labels sampled from the model (the module docstring shows the loop). ``bs``,
    the examples (tokens) per estimate that scale ``rho``, is also a param-group hyperparameter
    (default 5120, the authors' ``step`` default) that ``step()`` uses when it is given none. See
    :func:`sophiag` for the equations and the one place where we differ (infinite gradients).
    """

    rule = staticmethod(sophiag)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = 0.04,
        weight_decay: float = 1e-1,
        *,
        bs: float = DEFAULT_BS,
        maximize: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        fast: bool | None = None,
        fused: bool | None = None,
        differentiable: bool = False,
    ) -> None:
        self._step_bs: Any = None
        defaults = dict(lr=lr, betas=betas, rho=rho, weight_decay=weight_decay, bs=bs)
        super().__init__(
            params,
            defaults,
            foreach=foreach,
            maximize=maximize,
            fast=fast,
            fused=fused,
            capturable=capturable,
            differentiable=differentiable,
        )

    def validate(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        check_range(name, "lr", group["lr"], 0.0)
        check_betas(name, group)
        check_range(name, "rho", group["rho"], 0.0)
        check_range(name, "weight_decay", group["weight_decay"], 0.0)
        check_range(name, "bs", group["bs"], 0.0)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        return {k: torch.zeros_like(param, memory_format=torch.preserve_format) for k in ("exp_avg", "hessian")}

    def rule_kwargs(self, group: dict[str, Any]) -> dict[str, Any]:
        kwargs = super().rule_kwargs(group)
        if self._step_bs is not None:
            kwargs["bs"] = self._step_bs
        return kwargs

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, bs: float | None = None) -> Any:
        """One step; ``bs`` (the authors' argument) overrides every group's ``bs`` for this call only."""
        if bs is None:
            return super().step(closure)
        check_range(type(self).__name__, "bs", bs, 0.0)
        self._step_bs = _value(bs)
        try:
            return super().step(closure)
        finally:
            self._step_bs = None

    @torch.no_grad()
    def update_hessian(self) -> None:
        """Fold every ``p.grad`` into its curvature estimate: ``hessian = beta2 * hessian + (1 - beta2) * p.grad**2``.

        Call it after a backward pass of the mean loss on labels sampled from the model's own
        output distribution (the Gauss-Newton-Bartlett estimator; the module docstring shows the
        training loop), as the authors' ``update_hessian()``. Parameters without a gradient are
        skipped; a parameter seen for the first time gets its state (step count 0). ``maximize``
        does not matter here (the gradient is squared).
        """
        name = type(self).__name__
        for group in self.param_groups:
            beta2 = _value(group["betas"][1])
            hessians, grads = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{name} does not support sparse gradients")
                if p.is_complex():
                    raise RuntimeError(f"{name} does not support complex parameters")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state.update(self.init_state(p, group))
                hessians.append(state["hessian"])
                grads.append(p.grad)
            if hessians:
                new = TensorList(hessians)
                new.copy_(sophiag_hessian(new, TensorList(grads), beta2=beta2))
