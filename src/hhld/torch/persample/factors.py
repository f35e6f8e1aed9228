"""Per-sample gradient contributions of one parameter and their squared norms.

A parameter used once or several times in a forward pass receives, for every sample ``i``, a
per-sample gradient that is the sum of its *contributions*, one per use. Three forms:

* :class:`Outer` -- ``sum_t u_it v_it^T`` with ``u (B, T, q)`` (or integer ids ``(B, T)``,
  one-hot rows of ``q`` classes) and ``v (B, T, p)``: the gradient of a Linear / conv / matmul
  weight (``u`` the output gradient, ``v`` the input) or of an embedding table (``u`` the ids,
  ``v`` the output gradient), flattened to ``(q, p)`` with ``q = shape[0]``. Optional ``rows``
  places ``u`` in rows ``[r0, r0 + u.shape[-1])`` of ``q`` (a weight used through a row slice,
  e.g. ``nn.MultiheadAttention``'s packed in-projection split into q / kv).
* :class:`Dense` -- the per-sample gradients themselves ``(B, *shape)`` (biases, norms'
  affine parameters, the generic vector-Jacobian fallback).
* :class:`SqNorm` -- already squared per-sample norms ``(B,)`` (a stochastic sketch); it cannot be
  combined with another contribution of the same parameter.

:func:`per_sample_sq_norms` returns ``||sum of contributions_i||^2`` for every sample, exactly:
one Outer by the Gram ("ghost norm") identity
``||sum_t u_t v_t^T||^2 = sum_{t,s} (u_t . u_s)(v_t . v_s)`` or by forming the per-sample
gradient, whichever costs less; several Outers by one Gram over their concatenation (so a tied
embedding / output weight gets its cross terms); Dense parts by forming the per-sample
gradients (in batch chunks of bounded memory).

Numerics: every factor is divided by its largest magnitude before it is multiplied and squared
in float32 (float64 when the inputs are float64), and the squares of the scales are applied in
float64 at the end, so losses scaled by 1e-25 or 1e20 neither underflow nor overflow; entries
below 1e-18 of the largest (1e-150 in float64) are flushed to zero, so that no product is subnormal
(subnormal arithmetic slows CPU matrix products by up to 50x; the flushed share of a squared norm is
below 1e-36).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Outer", "Dense", "SqNorm", "per_sample_sq_norms", "compute_dtype", "MATERIALISE_BYTES"]

#: per-sample gradients are formed in batch chunks of at most this many bytes
MATERIALISE_BYTES = 1 << 28


@dataclass
class Outer:
    u: torch.Tensor            # (B, T, q_u) float, or (B, T) integer ids
    v: torch.Tensor            # (B, T, p)
    q: int                     # rows of the flattened parameter
    rows: int = 0              # first row of u's block (q_u <= q)

    @property
    def is_index(self) -> bool:
        return not self.u.is_floating_point()


@dataclass
class Dense:
    g: torch.Tensor            # (B, *shape)


@dataclass
class SqNorm:
    s: torch.Tensor            # (B,)


def compute_dtype(*ts) -> torch.dtype:
    """float64 when any input is float64, else float32 (half types are widened)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in ts) else torch.float32


#: after scaling to ``max |x| = 1``, entries below this are set to zero: their products would be subnormal
#: (products of two kept entries stay >= 1e-36 in float32), which makes CPU matrix products up to 50x slower,
#: and their share of a squared norm is below 1e-36 of it
_FLUSH = {torch.float32: 1e-18, torch.float64: 1e-150}


_SCALE = [True]  # set by per_sample_sq_norms: the unscaled first try or the scaled redo


def _scaled(x: torch.Tensor, dtype):
    """``(x / s, s)`` with ``s = max |x|`` as a float64 0-d tensor (1 when x is all zero or non-finite); entries
    that would only make subnormal products are flushed to zero. Unscaled (``s = 1``) on the first, fast try."""
    x = x.to(dtype)
    if not _SCALE[0]:
        return x, torch.ones((), dtype=torch.float64, device=x.device)
    s = x.detach().abs().amax().double()
    s = torch.where((s > 0) & torch.isfinite(s), s, torch.ones_like(s))
    return torch.nn.functional.hardshrink(x / s.to(dtype), _FLUSH[dtype]), s


#: a first, unscaled result whose nonzero entries are all above this (and finite) is kept
_SAFE = {torch.float32: 1e-28, torch.float64: 1e-280}


def _result_ok(r, dtype):
    """Finite, and every entry clear of the underflow range (an exact zero may be an underflow too: then the
    scaled redo decides)."""
    lo, hi = torch.aminmax(r)
    return bool(torch.isfinite(hi)) and float(lo) > _SAFE[dtype]


def _segments(outers, dense, dtype):
    """Normalised segments: ``(u_hat or ids, v_hat, c)`` per Outer and ``(g_hat, c)`` per Dense, with
    ``c = S_k / S`` (``S_k`` the segment's scale, the product of its factors' largest magnitudes, ``S``
    the largest ``S_k``), and ``S`` (float64, 0-d). The contribution of a segment is ``S c u_hat v_hat^T``."""
    segs, scales = [], []
    for o in outers:
        v, sv = _scaled(o.v, dtype)
        if o.is_index:
            u, su = o.u, torch.ones_like(sv)
        else:
            u, su = _scaled(o.u, dtype)
        segs.append(("outer", u, v, o))
        scales.append(su * sv)
    for d in dense:
        g, sg = _scaled(d.g, dtype)
        segs.append(("dense", g, None, d))
        scales.append(sg)
    S = torch.stack(scales).amax() if len(scales) > 1 else scales[0]
    cs = [(s / S) for s in scales]
    return segs, cs, S


def _pad_rows(u, o):
    if o.rows or u.shape[-1] != o.q:
        pad = u.new_zeros(u.shape[:-1] + (o.q,))
        pad[..., o.rows:o.rows + u.shape[-1]] = u
        return pad
    return u


def _materialise(outers, dense, shape, B, dtype):
    """Per-sample squared norms by forming the per-sample gradients, in batch chunks of bounded memory."""
    numel = math.prod(shape) if shape else 1
    q = shape[0] if shape else 1
    p = numel // q
    item = torch.finfo(dtype).bits // 8
    chunk = max(1, min(B, MATERIALISE_BYTES // max(1, numel * item)))
    segs, cs, S = _segments(outers, dense, dtype)
    out = []
    for i0 in range(0, B, chunk):
        i1 = min(B, i0 + chunk)
        acc = None
        for (kind, a, v, o), c in zip(segs, cs):
            c = c.to(dtype)
            if kind == "dense":
                g = (a[i0:i1] * c).reshape(i1 - i0, q, p)
            elif o.is_index:
                g = v.new_zeros((i1 - i0, q, p))
                g.scatter_add_(1, a[i0:i1].unsqueeze(-1).expand(-1, -1, p), v[i0:i1] * c)
            else:
                g = torch.bmm((a[i0:i1] * c).transpose(1, 2), v[i0:i1])  # (b, q_u, p)
                if o.rows or g.shape[1] != q:
                    full = g.new_zeros((i1 - i0, q, p))
                    full[:, o.rows:o.rows + g.shape[1]] = g
                    g = full
            acc = g if acc is None else acc + g
        out.append(acc.reshape(i1 - i0, -1).square().sum(1).double())
    return torch.cat(out) * (S * S)


def _gram_u(segs, cs, dtype):
    """``(B, T, T)`` Gram matrix of the weighted u factors (dense rows or one-hot ids) of all segments."""
    us = []
    for (kind, u, v, o), c in zip(segs, cs):
        c = c.to(dtype)
        us.append((u, c) if o.is_index else (_pad_rows(u, o) * c, None))
    rows = []
    for a, ca in us:
        cols = []
        for b, cb in us:
            if ca is None and cb is None:
                cols.append(torch.bmm(a, b.transpose(1, 2)))
            elif ca is not None and cb is not None:
                cols.append((a.unsqueeze(2) == b.unsqueeze(1)).to(dtype) * (ca * cb))
            elif ca is None:  # a dense (B, Ta, q), b ids (B, Tb): a_t . e_{b_s} = a[t, b_s]
                cols.append(torch.gather(a, 2, b.unsqueeze(1).expand(-1, a.shape[1], -1)) * cb)
            else:
                cols.append(torch.gather(b, 2, a.unsqueeze(1).expand(-1, b.shape[1], -1)).transpose(1, 2) * ca)
        rows.append(torch.cat(cols, 2) if len(cols) > 1 else cols[0])
    return torch.cat(rows, 1) if len(rows) > 1 else rows[0]


def per_sample_sq_norms(contribs, shape) -> torch.Tensor:
    """``||g_i||^2`` (float64, shape ``(B,)``) of a parameter of ``shape`` from its contributions.

    On the CPU the factors are first used as they are, and the result kept when it is finite and clear of
    the underflow range; otherwise (and always on other devices, where the check would cost a
    synchronisation) every factor is scaled to a largest magnitude of 1 first."""
    if not contribs:
        raise ValueError("no contribution")
    ref = next((c.v if isinstance(c, Outer) else c.g if isinstance(c, Dense) else c.s) for c in contribs)
    if ref.device.type == "cpu" and not any(isinstance(c, SqNorm) for c in contribs):
        _SCALE[0] = False
        try:
            r = _per_sample_sq_norms(contribs, tuple(shape))
        finally:
            _SCALE[0] = True
        dt = torch.float64 if r.dtype == torch.float64 and _factor_dtype(contribs) == torch.float64 else torch.float32
        if _result_ok(r, dt):
            return r
    return _per_sample_sq_norms(contribs, tuple(shape))


def _factor_dtype(contribs):
    return compute_dtype(*[c.v for c in contribs if isinstance(c, Outer)],
                         *[c.u for c in contribs if isinstance(c, Outer) and not c.is_index],
                         *[c.g for c in contribs if isinstance(c, Dense)])


def _per_sample_sq_norms(contribs, shape) -> torch.Tensor:
    shape = tuple(shape)
    sq = [c for c in contribs if isinstance(c, SqNorm)]
    if sq:
        if len(contribs) > 1:
            raise ValueError("a sketched (SqNorm) contribution cannot be combined with another use of the "
                             "same parameter")
        return sq[0].s.double()
    outers = [c for c in contribs if isinstance(c, Outer)]
    dense = [c for c in contribs if isinstance(c, Dense)]
    B = (outers[0].v if outers else dense[0].g).shape[0]
    dtype = compute_dtype(*[o.v for o in outers], *[o.u for o in outers if not o.is_index],
                          *[d.g for d in dense])
    if not outers and len(dense) == 1:
        g, s = _scaled(dense[0].g.reshape(B, -1), dtype)
        return g.square().sum(1).double() * (s * s)
    if dense or len(shape) < 2:
        return _materialise(outers, dense, shape, B, dtype)
    q = shape[0]
    p = math.prod(shape[1:])
    T = sum(o.v.shape[1] for o in outers)
    dense_u = any(not o.is_index for o in outers)
    gram_cost = T * T * (p + (q if dense_u else 1))
    mat_cost = T * q * p if dense_u else T * p + q * p
    if gram_cost > mat_cost:
        return _materialise(outers, [], shape, B, dtype)
    segs, cs, S = _segments(outers, [], dtype)
    if len(segs) == 1 and T == 1 and dense_u:
        _, u, v, o = segs[0]
        return (u[:, 0].square().sum(1) * v[:, 0].square().sum(1)).double() * (S * S)
    gu = _gram_u(segs, cs, dtype)
    vs = torch.cat([v for _, _, v, _ in segs], 1) if len(segs) > 1 else segs[0][2]
    gv = torch.bmm(vs, vs.transpose(1, 2))
    return (gu * gv).sum((1, 2)).double() * (S * S)
