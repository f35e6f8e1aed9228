"""Learning-rate tools: the documents' ``eta_opt`` prediction and a standard LR range test.

* :func:`eta_opt_prediction` -- **the documents' formula** (Takeaway 9, "Optimal Learning Rate
  Formula"): ``eta_opt = sqrt(D * Tr(grad^2 L) / N)`` (:func:`hhld.theory.eta_opt`), with

  - ``D`` the effective diffusion of SGD measured by :func:`hhld.torch.noise.gradient_noise_stats`
    (``D = lr tr Sigma / (2 B d)`` per coordinate, at the learning rate ``lr`` the run uses; so
    the prediction scales like ``sqrt(lr)``: it is a statement about the current run), or a ``D``
    given by the caller (e.g. ``HeisenbergSGD``'s ``D_inject``);
  - ``Tr grad^2 L`` by Hutchinson (:func:`hhld.torch.hessian.hutchinson_trace`) with its standard
    error, or exactly (``trace="exact"``: ``d`` Hessian-vector products, tiny models only);
  - ``N`` the documents' N, which they do not define: the number of trainable parameters by
    default (``n="params"``), or any number given (e.g. the number of training samples).

  The documents use ``eta`` in two senses: the learning rate ("eta_opt", "no more grid search")
  and the "learning inertia" ``eta = 1 / learning_rate`` of their reference code. Both readings
  are returned: ``as_learning_rate = eta_opt`` and ``as_inverse = 1 / eta_opt`` (the learning
  rate implied when ``eta_opt`` is an inertia). The error bar propagates the relative standard
  errors of ``D`` (batch-to-batch, when several batches are given) and of the trace:
  ``se(eta)/eta = 1/2 sqrt((se_D/D)^2 + (se_T/T)^2)``.

* :func:`lr_range_test` -- **standard**, not from the documents (Smith 2015, "Cyclical Learning
  Rates"; the fastai / pytorch-lr-finder variant): the learning rate ramps exponentially from
  ``start_lr`` to ``end_lr`` over ``num_steps`` optimizer steps, the loss is smoothed by a
  bias-corrected exponential moving average, the run stops when the smoothed loss exceeds
  ``diverge_factor`` x its minimum (or is not finite), and the suggestion is the learning rate of
  the steepest descent of the smoothed loss against ``log lr``. The model's parameters, buffers,
  gradients and training mode and the optimizer's state (``state_dict``, which for
  ``HeisenbergSGD`` includes the noise generator) are restored afterwards.
"""
from __future__ import annotations

import contextlib
import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import nn

from .._validation import check_int, check_positive
from ..theory import eta_opt as _eta_opt_formula
from .hessian import hutchinson_trace, make_hvp
from .noise import gradient_noise_stats, trainable_parameters
from .untouched import untouched

__all__ = ["EtaOptPrediction", "eta_opt_prediction", "LRRangeResult", "lr_range_test"]


# --------------------------------------------------------------------------- eta_opt
@dataclass
class EtaOptPrediction:
    """The documents' ``eta_opt = sqrt(D Tr / N)`` with its inputs and error bar."""

    eta_opt: float
    stderr: float
    D: float
    D_stderr: float
    hessian_trace: float
    hessian_trace_stderr: float
    n: float
    lr: float | None
    n_batches: int
    trace_method: str
    as_learning_rate: float
    as_inverse: float
    as_inverse_stderr: float
    notes: list[str] = field(default_factory=list)


def _batches(data, n_batches):
    if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[1]):
        return [tuple(data)]
    out = []
    for i, b in enumerate(data):
        if i >= n_batches:
            break
        out.append((b[0], b[1]))
    if not out:
        raise ValueError("data gave no batch: pass (inputs, targets) or an iterable of such pairs")
    return out


def _exact_trace(model, loss_fn, inputs, targets) -> float:
    hvp, params = make_hvp(model, loss_fn, inputs, targets)
    tr = 0.0
    for i, p in enumerate(params):
        for k in range(p.numel()):
            vs = [torch.zeros_like(q) for q in params]
            vs[i].view(-1)[k] = 1
            tr += float(hvp(vs)[i].reshape(-1)[k])
    return tr


def eta_opt_prediction(model: nn.Module, loss_fn, data, *, lr: float | None = None, optimizer=None,
                       D: float | None = None, n: int | float | str = "params", n_probes: int = 32,
                       n_batches: int = 1, trace: str = "hutchinson", generator: torch.Generator | None = None,
                       loss_reduction: str = "mean") -> EtaOptPrediction:
    """The documents' ``eta_opt = sqrt(D Tr(grad^2 L) / N)`` measured on ``model`` (see the module doc).

    ``data``: one ``(inputs, targets)`` batch, or an iterable of batches (the first ``n_batches``
    are used; ``D`` and the trace are averaged over them, numerators apart from denominators).
    ``lr`` (or ``optimizer``, whose first group's lr is used) is needed to measure ``D`` unless
    ``D`` is given. ``trace``: ``"hutchinson"`` (``n_probes`` Rademacher probes) or ``"exact"``.
    """
    if trace not in ("hutchinson", "exact"):
        raise ValueError(f"trace must be 'hutchinson' or 'exact', got {trace!r}")
    if loss_reduction not in ("mean", "sum"):
        raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
    n_probes = check_int("n_probes", n_probes, minimum=1)
    n_batches = check_int("n_batches", n_batches, minimum=1)
    params = trainable_parameters(model)
    dim = sum(p.numel() for p in params.values())
    if n == "params":
        n_val = float(dim)
    elif isinstance(n, str):
        raise ValueError(f"n must be 'params' or a positive number, got {n!r}")
    else:
        n_val = check_positive("n", n)
    if lr is None and optimizer is not None:
        lr = float(optimizer.param_groups[0]["lr"])
    if D is None and lr is None:
        raise ValueError("eta_opt_prediction needs lr= (or optimizer=) to measure D, or D= directly")
    if D is not None:
        D = check_positive("D", D)
    if lr is not None:
        lr = check_positive("lr", lr)
    notes: list[str] = []
    batches = _batches(data, n_batches)
    Ds, trs, tr_ses = [], [], []
    for inputs, targets in batches:
        if D is None:
            st = gradient_noise_stats(model, loss_fn, inputs, targets, lr=lr, loss_reduction=loss_reduction)
            Ds.append(float(st.D))
        if trace == "exact":
            trs.append(_exact_trace(model, loss_fn, inputs, targets))
            tr_ses.append(0.0)
        else:
            est = hutchinson_trace(model, loss_fn, inputs, targets, n_probes=n_probes, generator=generator)
            trs.append(float(est.trace))
            tr_ses.append(float(est.stderr))
    k = len(batches)
    if D is None:
        D_val = float(np.mean(Ds))
        D_se = float(np.std(Ds, ddof=1) / math.sqrt(k)) if k > 1 else float("nan")
        if k == 1:
            notes.append("D from one batch: no error bar on D (pass several batches)")
    else:
        D_val, D_se = float(D), 0.0
        notes.append("D given by the caller")
    tr_val = float(np.mean(trs))
    tr_se = float(math.sqrt(sum(s * s for s in tr_ses)) / k)
    if trace == "hutchinson" and k > 1:
        tr_se = max(tr_se, float(np.std(trs, ddof=1) / math.sqrt(k)))
    if tr_val < 0 or D_val < 0:
        notes.append(f"negative trace ({tr_val:g}) or D ({D_val:g}): the formula has no real value")
        eta = float("nan")
    else:
        eta = float(_eta_opt_formula(D_val, tr_val, n_val))
    rel = 0.0
    if D_val > 0 and math.isfinite(D_se):
        rel += (D_se / D_val) ** 2
    if tr_val > 0:
        rel += (tr_se / tr_val) ** 2
    se = 0.5 * math.sqrt(rel) * eta if math.isfinite(eta) else float("nan")
    inv = 1.0 / eta if eta and math.isfinite(eta) else float("nan")
    return EtaOptPrediction(
        eta_opt=eta, stderr=se, D=D_val, D_stderr=D_se, hessian_trace=tr_val, hessian_trace_stderr=tr_se,
        n=n_val, lr=lr, n_batches=k, trace_method=trace, as_learning_rate=eta, as_inverse=inv,
        as_inverse_stderr=se * inv * inv if math.isfinite(inv) else float("nan"), notes=notes,
    )


# --------------------------------------------------------------------------- LR range test
@dataclass
class LRRangeResult:
    """Outcome of :func:`lr_range_test` (lists are per step actually run)."""

    lrs: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    suggested_lr: float | None
    min_loss_lr: float | None
    diverged: bool
    steps_run: int


def _cycle(loader: Iterable):
    while True:
        empty = True
        for b in loader:
            empty = False
            yield b
        if empty:
            raise ValueError("loader gave no batch")


def lr_range_test(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn, loader, start_lr: float = 1e-7,
                  end_lr: float = 10.0, num_steps: int = 100, smoothing: float = 0.05,
                  diverge_factor: float = 4.0, skip_start: int = 3, skip_end: int = 1,
                  restore: bool = True) -> LRRangeResult:
    """Exponential LR sweep (see the module doc). ``loader`` yields ``(inputs, targets)`` and is
    cycled; ``smoothing`` is the weight of the newest loss in the moving average (0 < s <= 1);
    ``skip_start`` / ``skip_end`` points are left out when looking for the steepest slope."""
    start_lr = check_positive("start_lr", start_lr)
    end_lr = check_positive("end_lr", end_lr)
    if end_lr <= start_lr:
        raise ValueError(f"end_lr must be > start_lr, got start_lr={start_lr}, end_lr={end_lr}")
    num_steps = check_int("num_steps", num_steps, minimum=2)
    if not (0 < smoothing <= 1):
        raise ValueError(f"smoothing must be in (0, 1], got smoothing={smoothing!r}")
    if diverge_factor <= 1:
        raise ValueError(f"diverge_factor must be > 1, got diverge_factor={diverge_factor!r}")
    skip_start = check_int("skip_start", skip_start, minimum=0)
    skip_end = check_int("skip_end", skip_end, minimum=0)

    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(optimizer.state_dict())
    saved_grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    saved_modes = [(m, m.training) for m in model.modules()]
    lrs, losses, smooth = [], [], []
    diverged = False
    avg = 0.0
    best = math.inf
    ratio = end_lr / start_lr
    it = _cycle(loader)
    # restore=True also leaves the global random generators where they were (dropout masks, a shuffling loader's
    # order): the training that follows is the one it would have been without the sweep
    with untouched(model) if restore else contextlib.nullcontext():
        try:
            model.train()
            for i in range(num_steps):
                lr = start_lr * ratio ** (i / (num_steps - 1))
                for g in optimizer.param_groups:
                    g["lr"] = lr
                inputs, targets = next(it)
                optimizer.zero_grad()
                out = model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
                loss = loss_fn(out, targets)
                lv = float(loss.detach())
                if not math.isfinite(lv):
                    diverged = True
                    break
                loss.backward()
                optimizer.step()
                avg = smoothing * lv + (1 - smoothing) * avg
                s = avg / (1 - (1 - smoothing) ** (i + 1))
                lrs.append(lr)
                losses.append(lv)
                smooth.append(s)
                best = min(best, s)
                if i > 0 and s > diverge_factor * best:
                    diverged = True
                    break
        finally:
            if restore:
                model.load_state_dict(saved_model)
                optimizer.load_state_dict(saved_opt)
                for p, g in zip(model.parameters(), saved_grads):
                    p.grad = g
                for m, t in saved_modes:
                    m.training = t

    suggestion = None
    min_lr = None
    if smooth:
        min_lr = lrs[int(np.argmin(smooth))]
        # the bias-corrected moving average of the first points is noisier than later: its standard deviation is
        # sqrt((1 + q) / (1 - q)) times the asymptotic one, q = (1 - smoothing)^(i + 1); the points where that
        # exceeds 2 (q > 0.6: the first 10 at smoothing 0.05) are left out too, or their noise is the steepest
        # "slope" (a suggestion at the sweep's first points, 1.7e-7, on a sweep whose loss only fell near lr = 1)
        warm = int(math.ceil(math.log(0.6) / math.log(1.0 - smoothing))) - 1 if smoothing < 1 else 0
        lo, hi = max(skip_start, warm), len(smooth) - skip_end
        if hi - lo >= 3:
            ys = np.asarray(smooth[lo:hi])
            xs = np.log(np.asarray(lrs[lo:hi]))
            slope = np.gradient(ys, xs)
            # the noise of that slope, from the slopes themselves at the sweep's smallest learning rates (its first
            # third, where the loss has not begun to move on a sweep that starts low enough): their median absolute
            # deviation, robust to a descent that starts early, each slope scaled by its point's factor
            # sqrt((1 + q) / (1 - q)) (the bias-corrected average's extra noise at its start). That noise is neither
            # white nor small (the batches of a short loader come round periodically, which a formula for
            # independent losses underestimates). A slope counts as a descent when it lies more than 4 of those below
            # the low-lr median; the suggestion is the steepest such slope, and there is none when no slope does (a
            # sweep whose loss barely moves: random labels gave 1.7e-7 and 7.7e-7 as "suggestions"), with a warning
            q = (1.0 - smoothing) ** (np.arange(lo, hi) + 1.0)
            z = slope / np.sqrt((1.0 + q) / (1.0 - q)) if smoothing < 1 else slope
            low = z[:max(5, len(z) // 3)]
            med = float(np.median(low))
            spread = 1.4826 * float(np.median(np.abs(low - med)))
            descent = np.flatnonzero(z < med - 4.0 * spread)
            if descent.size:
                suggestion = float(lrs[lo + int(descent[np.argmin(slope[descent])])])
            else:
                i = int(np.argmin(slope))
                warnings.warn(f"lr_range_test: the steepest descent of the smoothed loss, {slope[i]:.3g} per unit of "
                              f"log lr, is within 4 standard deviations of its noise (at the smallest learning rates: "
                              f"median {med:.3g}, spread {spread:.3g}): no steepest-slope suggestion (suggested_lr "
                              "None); sweep to a larger end_lr, or with more steps or larger batches", RuntimeWarning,
                              stacklevel=2)

    return LRRangeResult(lrs=lrs, losses=losses, smoothed_losses=smooth, suggested_lr=suggestion,
                         min_loss_lr=min_lr, diverged=diverged, steps_run=len(lrs))
