"""Hessian trace (Hutchinson) and top Hessian eigenvalue of a model's loss on a batch.

Hessian-vector products are taken by double backward: one forward/backward with
``create_graph=True`` builds ``grad L``; each product ``H v = d(grad L . v)/d theta`` is then
one more backward through that graph (:func:`make_hvp`).

* :func:`hutchinson_trace` -- ``Tr H ~ mean_k v_k^T H v_k`` with Rademacher probes ``v_k``;
  unbiased, with the standard error ``std_k / sqrt(K)`` of the ``K`` probe values.
* :func:`top_eigenvalue` -- power iteration on ``H`` (warm-startable from a previous
  eigenvector); it converges to the eigenvalue of largest *magnitude*, which is the top
  eigenvalue whenever the Hessian's positive curvature dominates (the usual case, and the
  one that matters for the stability bound ``2 / lambda_max`` of gradient descent).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .noise import call_model, trainable_parameters
from .untouched import untouched

__all__ = ["make_hvp", "hutchinson_trace", "top_eigenvalue", "TraceEstimate", "EigenEstimate"]


class TraceEstimate(NamedTuple):
    trace: float
    stderr: float


class EigenEstimate(NamedTuple):
    eigenvalue: float
    eigenvector: list  # one tensor per parameter (unit norm overall)
    n_iter: int
    converged: bool


def _math_sdpa():
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])
    except ImportError:  # pragma: no cover - older torch
        import contextlib

        return contextlib.nullcontext()


def make_hvp(model: nn.Module, loss_fn, inputs, targets, params=None):
    """Return ``(hvp, params)``: ``hvp(vs) -> H vs`` for lists of tensors shaped like ``params``."""
    if params is None:
        params = list(trainable_parameters(model).values())
    # fused attention kernels (flash / memory-efficient) have no double backward: use the math kernel; the forward
    # leaves no trace on the model's buffers or the global random stream (:mod:`hhld.torch.untouched`)
    with _math_sdpa(), untouched(model):
        loss = loss_fn(call_model(model, inputs), targets)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is not finite ({float(loss)}); no Hessian-vector products")
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    pairs = [(g, p) for g, p in zip(grads, params)]

    def hvp(vs):
        gs, vv, idx = [], [], []
        for i, ((g, p), v) in enumerate(zip(pairs, vs)):
            if g is not None and g.requires_grad:
                gs.append(g)
                vv.append(v)
                idx.append(i)
        out = [torch.zeros_like(p) for p in params]
        if gs:
            hv = torch.autograd.grad(gs, [params[i] for i in idx], grad_outputs=vv,
                                     retain_graph=True, allow_unused=True)
            for i, h in zip(idx, hv):
                if h is not None:
                    out[i] = h
        return out

    return hvp, params


def _rademacher(p, generator):
    v = torch.randint(0, 2, p.shape, generator=generator, dtype=torch.int8,
                      device=generator.device if generator is not None else p.device)
    return (v.to(device=p.device, dtype=p.dtype) * 2 - 1)


def hutchinson_trace(model: nn.Module, loss_fn, inputs, targets, n_probes: int = 16,
                     generator: torch.Generator | None = None, *, hvp=None, params=None) -> TraceEstimate:
    """Hutchinson estimate of ``Tr grad^2 L`` with Rademacher probes: ``(trace, stderr)``.

    ``generator`` (a ``torch.Generator``) makes the probes reproducible. ``hvp`` / ``params``
    may be passed from :func:`make_hvp` to share one graph with :func:`top_eigenvalue`.
    """
    if isinstance(n_probes, bool) or not isinstance(n_probes, int) or n_probes < 1:
        raise ValueError(f"n_probes must be an integer >= 1, got {n_probes!r}")
    if hvp is None:
        hvp, params = make_hvp(model, loss_fn, inputs, targets, params)
    vals = []
    for _ in range(n_probes):
        vs = [_rademacher(p, generator) for p in params]
        hv = hvp(vs)
        vals.append(sum((v.double() * h.double()).sum() for v, h in zip(vs, hv)))
    vals_t = torch.stack(vals).cpu()
    tr = float(vals_t.mean())
    se = float(vals_t.std(unbiased=True) / math.sqrt(n_probes)) if n_probes > 1 else math.inf
    if not math.isfinite(tr):
        raise FloatingPointError("Hutchinson trace is not finite")
    return TraceEstimate(tr, se)


def top_eigenvalue(model: nn.Module, loss_fn, inputs, targets, n_iter: int = 20, tol: float = 1e-3,
                   init=None, generator: torch.Generator | None = None, *, hvp=None, params=None) -> EigenEstimate:
    """Largest-magnitude Hessian eigenvalue by power iteration.

    ``init`` (a list of tensors shaped like the parameters, e.g. the previous
    ``eigenvector``) warm-starts the iteration. Stops when the relative change of the
    Rayleigh quotient falls below ``tol`` or after ``n_iter`` products.
    """
    if hvp is None:
        hvp, params = make_hvp(model, loss_fn, inputs, targets, params)
    if init is None:
        vs = [torch.randn(p.shape, generator=generator, dtype=p.dtype,
                          device=generator.device if generator is not None else p.device).to(p.device)
              for p in params]
    else:
        vs = [v.detach().to(device=p.device, dtype=p.dtype).clone() for v, p in zip(init, params)]

    def _norm(xs):
        return torch.sqrt(sum((x.double() ** 2).sum() for x in xs))

    n = _norm(vs)
    if not n > 0:
        raise ValueError("init vector has zero norm")
    vs = [v / n for v in vs]
    lam = None
    converged = False
    it = 0
    for it in range(1, n_iter + 1):
        hv = hvp(vs)
        new = float(sum((v.double() * h.double()).sum() for v, h in zip(vs, hv)))
        nh = _norm(hv)
        if not math.isfinite(new):
            raise FloatingPointError("power iteration produced a non-finite Rayleigh quotient")
        if nh == 0:
            lam, converged = 0.0, True
            break
        vs = [h / nh for h in hv]
        if lam is not None and abs(new - lam) <= tol * max(abs(new), 1e-30):
            lam, converged = new, True
            break
        lam = new
    return EigenEstimate(lam, [v.detach() for v in vs], it, converged)
