"""Per-sample squared gradient norms of a whole model by ``torch.func`` (the exact fallback).

Given the inputs of one forward pass and the gradients its outputs received in the backward pass,
every sample's gradient is the vector-Jacobian product of the model's forward on that sample alone:
``vmap`` over the batch of ``vjp(functional_call(model, params, x_i))(dL/dy_i)``, in chunks of
``chunk_size`` samples. No loss function or targets are needed: the output gradients carry them.
The per-sample forward outputs are compared with the batch's outputs; a mismatch (dropout redrawn,
batch norm in training mode, any op that mixes samples) makes the result refused, never returned.

This is what the monitor uses for a ``torch.compile``'d model, whose compiled forward the per-sample
engine cannot watch: the recomputation runs the plain module eagerly.
"""
from __future__ import annotations

import torch
from torch import nn

from .rnn import RecomputeMismatch

__all__ = ["functional_sq_norms"]


def _leaves(x, out):
    if isinstance(x, torch.Tensor):
        out.append(x)
    elif isinstance(x, (list, tuple)):
        for a in x:
            _leaves(a, out)
    elif isinstance(x, dict):
        for a in x.values():
            _leaves(a, out)
    return out


def _rebuild(x, it):
    if isinstance(x, torch.Tensor):
        return next(it)
    if isinstance(x, (list, tuple)):
        return type(x)(_rebuild(a, it) for a in x)
    if isinstance(x, dict):
        return {k: _rebuild(v, it) for k, v in x.items()}
    return x


def _batch_axis(t, B, pref):
    if t.dim() == 0:
        return None
    if t.dim() > pref and t.shape[pref] == B:
        return pref
    cands = [a for a in range(t.dim()) if t.shape[a] == B]
    return cands[0] if cands else None


def functional_sq_norms(module: nn.Module, params: dict, args, kwargs, outputs, out_grads, B: int,
                        batch_axis: int = 0, chunk_size: int | None = None, rtol: float = 1e-4):
    """``{name: (B,) float64}`` per-sample squared gradient norms of ``params`` (a dict of the module's
    parameters by name). ``outputs`` / ``out_grads``: the forward's output tensors and their gradients
    (``None`` for an output that got none)."""
    from torch.func import functional_call, vjp, vmap

    names = list(params)
    prim = {n: params[n].detach() for n in names}
    others = {n: p.detach() for n, p in module.named_parameters() if n not in prim}
    buffers = dict(module.named_buffers())
    leaves = _leaves((tuple(args), dict(kwargs)), [])
    in_axes = tuple(_batch_axis(t, B, batch_axis) if t.is_floating_point() or t.dtype in (
        torch.int64, torch.int32, torch.bool) else None for t in leaves)
    if all(a is None for a in in_axes):
        raise RecomputeMismatch("no input has the batch axis")
    used = [(o, g) for o, g in zip(outputs, out_grads) if g is not None]
    if not used:
        raise RecomputeMismatch("no output received a gradient")
    out_axes = []
    for o, _ in used:
        ax = _batch_axis(o, B, batch_axis)
        if ax is None:
            raise RecomputeMismatch(f"an output of shape {tuple(o.shape)} has no batch axis")
        out_axes.append(ax)
    out_ids = [id(o) for o, _ in used]

    def per_sample(vals, cots):
        vals = [v.unsqueeze(a) if a is not None else v for v, a in zip(vals, in_axes)]
        a_, kw = _rebuild((tuple(args), dict(kwargs)), iter(vals))

        def f(p):
            res = functional_call(module, ({**others, **p}, buffers), a_, kw)
            flat = _leaves(res, [])
            return tuple(flat[i] for i in sel)

        ys, pull = vjp(f, prim)
        gs = pull(tuple(c.reshape(y.shape) for c, y in zip(cots, ys)))[0]
        sq = {n: (g.double() ** 2).sum() for n, g in gs.items()}
        return sq, ys

    # which of the module's flat outputs are the ones with gradients
    flat_out = _leaves(outputs, []) if not isinstance(outputs, list) else list(outputs)
    sel = [k for k, o in enumerate(flat_out) if id(o) in out_ids]
    vals = [t.detach() for t in leaves]
    cots = tuple(g.detach() for _, g in used)
    sq, ys = vmap(per_sample, in_dims=(list(in_axes), tuple(out_axes)), chunk_size=chunk_size,
                  randomness="different")(vals, cots)
    for y, (o, _), ax in zip(ys, used, out_axes):
        ref = o.detach().movedim(ax, 0)
        if y.numel() != ref.numel() or not torch.allclose(y.reshape(ref.shape).to(ref.dtype), ref, rtol=rtol,
                                                          atol=rtol * max(1.0, float(ref.abs().max()))):
            raise RecomputeMismatch("the per-sample recomputation differs from the batch's outputs (dropout, "
                                    "batch norm in training mode, or an op that mixes samples)")
    return sq
