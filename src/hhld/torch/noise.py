"""Gradient-noise statistics of a mini-batch, usable without the monitor.

For a batch of ``B`` samples with per-sample gradients ``g_i`` (gradient of the
per-sample loss ``l_i``) and batch mean ``gbar = (1/B) sum_i g_i``:

* ``tr Sigma = 1/(B-1) sum_i ||g_i - gbar||^2 = B/(B-1) (mean_i ||g_i||^2 - ||gbar||^2)``,
  the unbiased trace of the per-sample gradient covariance;
* ``||G||^2 = ||gbar||^2 - tr Sigma / B``, the unbiased estimate of the squared norm of the
  true (population) gradient (``E ||gbar||^2 = ||G||^2 + tr Sigma / B``);
* ``B_simple = tr Sigma / ||G||^2``, the "simple" gradient noise scale of McCandlish et al.
  (2018), *An Empirical Model of Large-Batch Training*;
* ``D = lr tr Sigma / (2 B d)``: the effective diffusion coefficient of SGD per coordinate.
  One SGD step ``theta -= lr gbar`` has noise covariance ``lr^2 Sigma / B``; matching it to
  an overdamped Langevin step ``theta -= lr grad L + sqrt(2 D lr) xi`` (time step ``lr``,
  mobility 1 -- the reference code's convention) gives ``2 D lr = lr^2 tr Sigma/(B d)`` per
  coordinate on average;
* ``C = ||G||^2 / (D d)``, the documents' consolidation ratio with this measured ``D``
  (:func:`hhld.observables.consolidation_ratio`).

Per-sample squared norms come from the per-sample engine (:mod:`hhld.torch.persample`), exact for
every layer it covers; every other parameter (e.g. upstream of a train-mode batch norm, which
couples the samples) goes through a fallback: ``"func"`` (per-sample gradients by
``torch.func.vmap``, with train-mode batch norms normalising by the batch's statistics held fixed),
or ``"half_batch"`` (the gradients ``g_A``, ``g_B`` of two halves of the batch:
``E ||g_A - g_B||^2 = tr Sigma (1/b_A + 1/b_B)``; unbiased but noisier). ``"auto"`` tries
``"func"`` then ``"half_batch"``. :attr:`NoiseStats.estimator` names the estimator of every
parameter. ``B_simple`` and ``C`` are ``None`` when the unbiased ``||G||^2`` is not positive.

The loss must be a mean (``loss_reduction="mean"``, default) or a sum (``"sum"``) of
per-sample losses over the batch axis (axis 0 of ``inputs``); a mean over tokens of
equal-length sequences is a mean of per-sample means and counts as ``"mean"``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .persample import PerSampleSqNorms
from .untouched import untouched

__all__ = ["NoiseStats", "gradient_noise_stats", "trainable_parameters", "call_model",
           "noise_from_moments", "diffusion_from_noise"]


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Named trainable parameters of ``model``; raises if there is none."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError(f"model {type(model).__name__} has no trainable parameters "
                         "(no parameter with requires_grad=True)")
    return params


def call_model(model, inputs):
    """``model(*inputs)`` for a tuple/list, else ``model(inputs)``."""
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _batch_size(inputs) -> int:
    x = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise TypeError("inputs must be a tensor (or tuple of tensors) with the batch on axis 0")
    return int(x.shape[0])


def _index(inputs, idx):
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(t[idx] for t in inputs)
    return inputs[idx]


def noise_from_moments(mean_sq_per_sample, batch_sq_norm, batch_size):
    """``(tr Sigma, unbiased ||G||^2)`` from ``mean_i ||g_i||^2`` and ``||gbar||^2`` (tensors or floats)."""
    B = batch_size
    tr = (mean_sq_per_sample - batch_sq_norm) * (B / (B - 1))
    return tr, batch_sq_norm - tr / B


def diffusion_from_noise(tr_sigma, lr, batch_size, dim):
    """The effective SGD diffusion per coordinate ``D = lr tr Sigma / (2 B d)``."""
    return lr * tr_sigma / (2.0 * batch_size * dim)


@dataclass
class NoiseStats:
    """Gradient-noise statistics of one batch (see the module docstring for the formulas)."""

    tr_sigma: float
    grad_sq_norm_unbiased: float
    batch_grad_sq_norm: float
    b_simple: float | None
    D: float | None
    C: float | None
    batch_size: int
    dim: int
    lr: float | None
    loss: float
    estimator: dict[str, str] = field(default_factory=dict)
    fallback_reasons: dict[str, str] = field(default_factory=dict)

    def estimators_used(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.estimator.values():
            out[v] = out.get(v, 0) + 1
        return out


def _batch_norm_stats(model):
    """Forward hooks that record the batch statistics each train-mode batch norm normalises with."""
    stats, handles = {}, []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or not m.track_running_stats):
            def hook(mod, inp, out, mod_=m):
                x = inp[0].detach()
                red = (0,) + tuple(range(2, x.dim()))
                stats[mod_] = (x.mean(red), x.var(red, unbiased=False))
            handles.append(m.register_forward_hook(hook))
    return stats, handles


def _per_sample_func(model, loss_fn, inputs, targets, names, all_params, bn_stats=None):
    """Per-sample squared gradient norms of the parameters ``names`` via torch.func.

    Train-mode batch norms normalise with the batch statistics ``bn_stats`` of the full batch, held
    fixed (the definition of a per-sample gradient when batch norm couples the samples)."""
    from torch.func import functional_call, grad, vmap

    buffers = dict(model.named_buffers())
    switched = []
    for m, (mean, var) in (bn_stats or {}).items():
        prefix = next(n for n, mm in model.named_modules() if mm is m)
        pre = prefix + "." if prefix else ""
        buffers[pre + "running_mean"] = mean
        buffers[pre + "running_var"] = var
        if m.training:
            switched.append(m)
    fixed = {n: p.detach() for n, p in all_params.items() if n not in names}
    sub = {n: all_params[n].detach() for n in names}
    tuple_in = isinstance(inputs, (tuple, list))

    def one(sub_params, x, y):
        xs = tuple(t.unsqueeze(0) for t in x) if tuple_in else x.unsqueeze(0)
        out = functional_call(model, ({**fixed, **sub_params}, buffers), xs if tuple_in else (xs,))
        return loss_fn(out, y.unsqueeze(0))

    in_x = tuple(0 for _ in inputs) if tuple_in else 0
    for m in switched:
        m.training = False
    try:
        grads = vmap(grad(one), in_dims=(None, in_x, 0), randomness="different")(
            sub, tuple(inputs) if tuple_in else inputs, targets)
    finally:
        for m in switched:
            m.training = True
    sq = sum((g.reshape(g.shape[0], -1).double() ** 2).sum(1) for g in grads.values())
    mean = {n: g.mean(0) for n, g in grads.items()}
    return sq, mean


def gradient_noise_stats(model: nn.Module, loss_fn, inputs, targets, *, lr: float | None = None,
                         loss_reduction: str = "mean", fallback: str = "auto",
                         l2_decay: dict | None = None) -> NoiseStats:
    """Gradient-noise statistics of ``loss_fn(model(inputs), targets)`` on one batch.

    Does not touch ``.grad`` of the parameters (gradients are taken with
    :func:`torch.autograd.grad`). ``lr`` (optional) gives the diffusion ``D`` and ``C``.
    Per-sample norms come from :class:`hhld.torch.persample.PerSampleSqNorms` (exact for every layer
    it covers); ``fallback`` in ``{"auto", "func", "half_batch", "error"}`` handles the rest
    (``"error"`` raises naming them). ``"func"`` is exact for deterministic models; train-mode batch
    norms are then evaluated with the batch's statistics held fixed (the definition of a per-sample
    gradient when batch norm couples the samples); active dropout is redrawn per sample (the estimator
    says so).

    ``l2_decay`` (``{parameter name: a}``): an L2 weight decay the optimizer adds to the gradient,
    ``p.grad + a p`` (``torch.optim.SGD``'s ``weight_decay``). It adds the same ``R = a p`` to every
    sample's gradient: ``tr Sigma`` does not change, the batch gradient is ``gbar + R``, so
    ``||G||^2`` and ``B_simple`` are those of the gradient the optimizer applies.
    """
    if loss_reduction not in ("mean", "sum"):
        raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
    if fallback not in ("auto", "func", "half_batch", "error"):
        raise ValueError(f"fallback must be one of 'auto', 'func', 'half_batch', 'error', got {fallback!r}")
    # its forward passes (the batch, torch.func's per-sample ones, the half batches) leave no trace on the model's
    # buffers or the global random stream (:mod:`hhld.torch.untouched`): it may be called in the middle of training
    with untouched(model):
        return _gradient_noise_stats(model, loss_fn, inputs, targets, lr, loss_reduction, fallback, l2_decay or {})


def _gradient_noise_stats(model, loss_fn, inputs, targets, lr, loss_reduction, fallback, l2_decay) -> NoiseStats:
    params = trainable_parameters(model)
    unknown = sorted(set(l2_decay) - set(params))
    if unknown:
        raise ValueError(f"l2_decay names parameters the model has not (or not trainable): {unknown}")
    B = _batch_size(inputs)
    if B < 2:
        raise ValueError(f"gradient noise statistics need a batch of at least 2 samples, got {B}")
    names = list(params)
    plist = [params[n] for n in names]
    dim = sum(p.numel() for p in plist)
    scale = float(B) if loss_reduction == "mean" else 1.0   # per-sample grad = scale * engine grad
    mean_div = 1.0 if loss_reduction == "mean" else float(B)  # batch mean grad = grad / mean_div

    engine = PerSampleSqNorms(model, params, check_every=None)
    bn_stats, bn_handles = _batch_norm_stats(model)
    try:
        with engine:
            loss = loss_fn(call_model(model, inputs), targets)
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                raise ValueError("loss_fn must return a scalar tensor (use reduction='mean' or 'sum')")
            grads = torch.autograd.grad(loss, plist, allow_unused=True)
    finally:
        for h in bn_handles:
            h.remove()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is not finite ({loss.item()})")
    gbar = {n: (g / mean_div if g is not None else None) for n, g in zip(names, grads)}
    for n, g in gbar.items():
        if g is not None and not bool(torch.isfinite(g).all()):
            raise FloatingPointError(f"non-finite gradient in parameter {n!r}")

    covered = set(engine.covered_last)
    estimator: dict[str, str] = {}
    reasons = dict(engine.reasons)
    for n in names:
        if gbar[n] is None:
            estimator[n] = "unused"
        elif n in covered:
            estimator[n] = f"exact:{engine.estimator.get(n, 'per-sample')}"
    uncovered = [n for n in names if n not in estimator]
    for n in uncovered:
        reasons.setdefault(n, "the per-sample engine did not see its use")

    zero = plist[0].new_zeros((), dtype=torch.float64)
    # each parameter's mean gradient, as its estimator defines it (for the L2 decay's shift of ||G||^2 below)
    means = {n: gbar[n] for n in names if n in covered}
    cov_sq = sum(((gbar[n].double() ** 2).sum() for n in names if n in covered), zero)
    per = engine.passes[-1] if engine.passes and engine.passes[-1] is not None else None
    if per is None:
        per = torch.zeros(B, dtype=torch.float64, device=plist[0].device)
        covered = set()
        cov_sq = zero
        means = {}
    tr_sigma, gsq_unb = noise_from_moments(per.double().mean() * scale * scale, cov_sq, B)
    batch_sq = cov_sq.clone()

    if uncovered:
        if fallback == "error":
            raise ValueError("no per-sample estimator for parameters " +
                             ", ".join(f"{n!r} ({reasons[n]})" for n in uncovered))
        done = False
        # a coupling other than a batch norm's (whose statistics the func estimator holds fixed): each sample alone
        # is not the model's computation, so no per-sample estimator applies; half batches still measure the noise
        alone = [n for n in uncovered if reasons[n].startswith("coupled:") and "batch norm" not in reasons[n]]
        if alone and fallback == "func":
            raise ValueError("torch.func per-sample gradients are not defined for " + ", ".join(
                f"{n!r} ({reasons[n]})" for n in alone) + ": use fallback='half_batch' (or 'auto')")
        if alone:
            for n in uncovered:
                reasons[n] += "; torch.func would take each sample alone, which this coupling forbids: used half_batch"
        if fallback in ("auto", "func") and not alone:
            try:
                sq, mean = _per_sample_func(model, loss_fn, inputs, targets, uncovered, params, bn_stats)
                # with the batch statistics held fixed, the per-sample gradients average to their own mean, not
                # to the coupled batch gradient: use that mean, so that every moment is of the same definition
                src = mean if bn_stats else gbar
                means.update((n, src[n]) for n in uncovered)
                u_sq = sum(((src[n].double() ** 2).sum() for n in uncovered), zero)
                t, gu = noise_from_moments(sq.double().mean(), u_sq, B)
                tr_sigma, gsq_unb, batch_sq = tr_sigma + t, gsq_unb + gu, batch_sq + u_sq
                drop = any(isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0
                           for m in model.modules())
                tag = "func" + ("; batch statistics held fixed" if bn_stats else "") + (
                    "; dropout redrawn per sample (an estimate)" if drop else "")
                for n in uncovered:
                    estimator[n] = tag
                done = True
            except Exception as exc:  # noqa: BLE001 - any vmap failure means: use the other estimator
                if fallback == "func":
                    raise RuntimeError(f"torch.func per-sample gradients failed for {uncovered}: {exc}") from exc
                for n in uncovered:
                    reasons[n] += f"; torch.func failed ({type(exc).__name__}), used half_batch"
        if not done:
            bA = B // 2
            halves = [slice(0, bA), slice(bA, B)]
            hg = []
            up = [params[n] for n in uncovered]
            for sl in halves:
                b = sl.stop - sl.start
                lh = loss_fn(call_model(model, _index(inputs, sl)), _index(targets, sl))
                gh = torch.autograd.grad(lh, up, allow_unused=True)
                div = 1.0 if loss_reduction == "mean" else float(b)
                hg.append([(g.double() / div if g is not None else torch.zeros_like(p, dtype=torch.float64))
                           for g, p in zip(gh, up)])
            diff = sum(((a - c) ** 2).sum() for a, c in zip(*hg))
            t = diff / (1.0 / bA + 1.0 / (B - bA))
            u_sq = sum(((gbar[n].double() ** 2).sum() for n in uncovered), zero)
            tr_sigma, gsq_unb, batch_sq = tr_sigma + t, gsq_unb + (u_sq - t / B), batch_sq + u_sq
            means.update((n, gbar[n]) for n in uncovered)
            for n in uncovered:
                estimator[n] = "half_batch"

    for n, a in l2_decay.items():
        if a and means.get(n) is not None:  # a parameter without gradient gets no decay from the optimizer either
            m = means[n].double()
            shift = ((m + a * params[n].detach().double()) ** 2).sum() - (m ** 2).sum()
            gsq_unb, batch_sq = gsq_unb + shift, batch_sq + shift

    tr_f, g_f, b_f = float(tr_sigma), float(gsq_unb), float(batch_sq)
    b_simple = tr_f / g_f if g_f > 0 else None
    D = C = None
    if lr is not None:
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be > 0, got lr={lr!r}")
        D = diffusion_from_noise(tr_f, lr, B, dim)
        C = g_f / (D * dim) if D > 0 else None
    return NoiseStats(tr_sigma=tr_f, grad_sq_norm_unbiased=g_f, batch_grad_sq_norm=b_f, b_simple=b_simple,
                      D=D, C=C, batch_size=B, dim=dim, lr=lr, loss=float(loss.detach()), estimator=estimator,
                      fallback_reasons={n: reasons[n] for n in uncovered})
