"""Gradient-noise statistics for free under ``torch.distributed`` DDP.

Under data-parallel training each worker ``w`` computes the gradient ``g_w`` of its own
mean-reduced loss over ``b`` samples (a small-batch gradient) and DDP all-reduces them into
``gbar = (1/W) sum_w g_w``, the gradient of the combined batch of ``B = W b`` samples (a
large-batch gradient). With

* ``S_small = (1/W) sum_w ||g_w||^2`` (per-worker squared norms, averaged over workers),
* ``S_big = ||gbar||^2`` (squared norm of the all-reduced gradient),

and ``E ||g_b||^2 = ||G||^2 + tr Sigma / b`` for a batch of ``b`` i.i.d. samples, McCandlish
et al. (2018), *An Empirical Model of Large-Batch Training*, appendix A, give the unbiased
estimators

* ``||G||^2 = (B S_big - b S_small) / (B - b)``,
* ``tr Sigma = (S_small - S_big) / (1/b - 1/B)``,
* ``B_simple = tr Sigma / ||G||^2``.

The conventions are those of :mod:`hhld.torch.noise`: the loss is a mean over the batch,
the per-sample gradient ``g_i`` is the gradient of that sample's loss, and ``Sigma`` is its
covariance. Both estimators are unbiased for the same population quantities as
:func:`hhld.torch.noise.gradient_noise_stats`, but on one batch they agree with it only for
``b = 1`` (then ``S_small = mean_i ||g_i||^2`` and the formula reduces to
``B/(B-1) (mean_i ||g_i||^2 - ||gbar||^2) = 1/(B-1) sum_i ||g_i - gbar||^2``). For ``b > 1``
they use only the ``W`` worker means, so a single step is noisier; accumulate over steps.

Usage::

    stats = register_noise_hook(ddp_model, DistributedNoiseStats(local_batch_size=b))
    for x, y in loader:
        loss_fn(ddp_model(x), y).backward()   # the hook records S_small, S_big
        ...
    est = stats.compute()   # collective: every rank must call it
    est.tr_sigma, est.grad_sq_norm_unbiased, est.b_simple
    stats.reset()

The hook replaces DDP's default all-reduce with the same computation as
``torch.distributed.algorithms.ddp_comm_hooks.default_hooks.allreduce_hook`` (divide by the
world size, then sum-all-reduce), so training is unchanged; it adds one squared norm per
bucket on each side of the all-reduce and no communication. :meth:`DistributedNoiseStats.compute`
does one small all-reduce to average ``||g_w||^2`` over workers. Every rank must use the
same per-worker batch size ``b``; gradient accumulation with ``no_sync()`` is not supported
(the reduced gradient is then a sum over micro-batches).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistributedNoiseStats", "DistributedNoiseEstimate", "register_noise_hook", "noise_hook"]


@dataclass
class DistributedNoiseEstimate:
    """Result of :meth:`DistributedNoiseStats.compute` (names as in :class:`hhld.torch.noise.NoiseStats`)."""

    tr_sigma: float
    grad_sq_norm_unbiased: float
    batch_grad_sq_norm: float     # S_big averaged over steps
    local_grad_sq_norm: float     # S_small averaged over steps
    b_simple: float
    batch_size: int               # B = W b
    local_batch_size: int         # b
    world_size: int               # W
    steps: int


class DistributedNoiseStats:
    """State of :func:`noise_hook`: accumulates ``S_small`` and ``S_big`` over steps.

    ``local_batch_size`` is the per-worker batch ``b``; ``process_group`` the DDP group
    (``None``: the default group).
    """

    def __init__(self, local_batch_size: int, process_group=None):
        if int(local_batch_size) < 1:
            raise ValueError(f"local_batch_size must be >= 1, got {local_batch_size}")
        self.local_batch_size = int(local_batch_size)
        self.process_group = process_group
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated steps."""
        self._local_sq = None   # sum over steps of ||g_w||^2 on this rank (tensor)
        self._big_sq = None     # sum over steps of ||gbar||^2 (tensor)
        self.steps = 0

    @property
    def world_size(self) -> int:
        return dist.get_world_size(self.process_group)

    def _add(self, name: str, value: torch.Tensor) -> None:
        old = getattr(self, name)
        setattr(self, name, value if old is None else old + value)

    def compute(self) -> DistributedNoiseEstimate:
        """Estimates averaged over the accumulated steps. Collective: call it on every rank."""
        if self.steps == 0 or self._local_sq is None or self._big_sq is None:
            raise RuntimeError("no step recorded yet: run a backward pass of the DDP model first")
        W = self.world_size
        b = self.local_batch_size
        B = W * b
        if W < 2:
            raise ValueError("the distributed noise estimate needs a world size of at least 2")
        local = self._local_sq.detach().clone().double()
        dist.all_reduce(local, op=dist.ReduceOp.SUM, group=self.process_group)
        s_small = float(local) / W / self.steps
        s_big = float(self._big_sq) / self.steps
        tr_sigma = (s_small - s_big) / (1.0 / b - 1.0 / B)
        gsq = (B * s_big - b * s_small) / (B - b)
        b_simple = tr_sigma / gsq if gsq > 0 else float("inf")
        return DistributedNoiseEstimate(tr_sigma=tr_sigma, grad_sq_norm_unbiased=gsq,
                                        batch_grad_sq_norm=s_big, local_grad_sq_norm=s_small,
                                        b_simple=b_simple, batch_size=B, local_batch_size=b,
                                        world_size=W, steps=self.steps)


def noise_hook(state, bucket):
    """DDP communication hook: ``allreduce_hook`` plus the squared norms before and after.

    Returns a ``torch.futures.Future`` of the reduced bucket (no return annotation: DDP checks
    it and this module uses postponed annotations)."""
    group = state.process_group if state.process_group is not None else dist.group.WORLD
    world_size = dist.get_world_size(group)
    buf = bucket.buffer()
    state._add("_local_sq", buf.detach().double().pow(2).sum())
    buf.div_(world_size)
    fut = dist.all_reduce(buf, group=group, async_op=True).get_future()
    is_last = bucket.is_last()

    def _after(f):
        out = f.value()[0]
        state._add("_big_sq", out.detach().double().pow(2).sum())
        if is_last:
            state.steps += 1
        return out

    return fut.then(_after)


def register_noise_hook(ddp_model, state: DistributedNoiseStats) -> DistributedNoiseStats:
    """Register :func:`noise_hook` on ``ddp_model`` (a ``DistributedDataParallel``); returns ``state``."""
    ddp_model.register_comm_hook(state, noise_hook)
    return state
