import pytorch_optimizer
import schedulefree

from optimlab.optim import ScheduleFreeAdamW, ScheduleFreeSGD

from .harness import Case


def training(opt):
    """``opt`` in train mode: the authors' package (and ours, as theirs) starts in eval mode."""
    opt.train()
    return opt


COMMON_INVALID = [
    (dict(lr=-1.0), r"ScheduleFree\w+: invalid lr=-1.0: expected 0 <= lr"),
    (dict(weight_decay=float("nan")), r"invalid weight_decay=nan"),
    (dict(warmup_steps=-1), r"invalid warmup_steps=-1: expected an integer >= 0"),
    (dict(warmup_steps=2.5), r"invalid warmup_steps=2.5: expected an integer >= 0"),
    (dict(r=-1.0), r"invalid r=-1.0: expected 0 <= r"),
    (dict(weight_lr_power=float("nan")), r"invalid weight_lr_power=nan"),
]
ADAMW_INVALID = COMMON_INVALID + [
    (dict(betas=(0.0, 0.999)), r"ScheduleFreeAdamW: invalid betas\[0\]=0.0: expected 0 < betas\[0\] < 1"),
    (dict(betas=(0.9, 1.0)), r"ScheduleFreeAdamW: invalid betas\[1\]=1.0: expected 0 <= betas\[1\] < 1"),
    (dict(eps=-1e-8), r"ScheduleFreeAdamW: invalid eps=-1e-08: expected 0 <= eps"),
]
SGD_INVALID = COMMON_INVALID + [
    (dict(momentum=0.0), r"ScheduleFreeSGD: invalid momentum=0.0: expected 0 < momentum < 1"),
    (dict(momentum=1.0), r"ScheduleFreeSGD: invalid momentum=1.0: expected 0 < momentum < 1"),
]


def _case(id, ours, ref, invalid, **kw):
    """``kw`` configures both sides, each in train mode.

    No ``solver``: the standard convergence runs measure the parameters as they are after the
    steps, which here is the training point y; what converges is the average x, which only
    ``eval()`` shows. test_schedulefree.py runs both problems and measures x.
    """
    return Case(
        id,
        make=lambda p, **o: training(ours(p, **{**kw, **o})),
        reference=lambda p: training(ref(p, **kw)),
        invalid=invalid,
    )


def _adamw(id, ref=schedulefree.AdamWScheduleFree, **kw):
    return _case(id, ScheduleFreeAdamW, ref, ADAMW_INVALID, **kw)


def _sgd(id, ref=schedulefree.SGDScheduleFree, **kw):
    return _case(id, ScheduleFreeSGD, ref, SGD_INVALID, **kw)


CASES = [
    _adamw("ScheduleFreeAdamW", lr=0.2),
    _adamw("ScheduleFreeAdamW-wd-warmup", lr=0.2, betas=(0.95, 0.99), weight_decay=0.1, warmup_steps=20),
    # polynomial weights, and lr-max weights that change during the warm-up
    _adamw("ScheduleFreeAdamW-r-power", lr=0.2, r=1.0, weight_lr_power=1.0, warmup_steps=10, eps=1e-3),
    _sgd("ScheduleFreeSGD", lr=0.1),
    _sgd("ScheduleFreeSGD-wd-warmup-r", lr=0.1, momentum=0.8, weight_decay=0.1, warmup_steps=20, r=0.5),
    # pytorch_optimizer's ports, as second opinions
    _adamw(
        "ScheduleFreeAdamW-vs-pytorch-optimizer",
        pytorch_optimizer.ScheduleFreeAdamW,
        lr=0.2,
        weight_decay=0.1,
        warmup_steps=20,
    ),
    _sgd(
        "ScheduleFreeSGD-vs-pytorch-optimizer",
        pytorch_optimizer.ScheduleFreeSGD,
        lr=0.1,
        weight_decay=0.1,
        warmup_steps=20,
    ),
]
