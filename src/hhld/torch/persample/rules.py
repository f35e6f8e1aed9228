"""Per-sample gradient contributions of the functional ops that carry parameters.

Each rule takes what the forward pass recorded (inputs, with the batch on axis 0) and the
gradient of the op's output (batch on axis 0) and returns the contributions
(:mod:`hhld.torch.persample.factors`) of the op's parameter arguments, keyed by the argument's
role (``"weight"``, ``"bias"``, ...). The formulas, per sample ``i`` (``t`` runs over every
position the op shares its weight across: sequence positions, conv patches, ...):

* linear ``y_t = W x_t + b``: ``dW_i = sum_t g_it x_it^T`` (Outer), ``db_i = sum_t g_it``;
* matmul with a parameter on the right ``y_t = x_t P``: ``dP_i = sum_t x_it g_it^T`` (Outer);
* conv (exact): the input unfolded into patches, then as linear over the ``L`` output
  positions; grouped convolutions form the per-sample gradient per group (Dense);
* embedding ``y_t = E[id_t]``: ``dE_i = sum_t e_{id_t} g_it^T`` (Outer with integer ids);
  positions at ``padding_idx`` get no gradient;
* layer / RMS / group / instance / batch norm affine parameters: ``dw_i = sum g_i * xhat_i``,
  ``db_i = sum g_i`` over the non-channel axes (Dense); ``xhat`` recomputed from the recorded
  input (batch norm in training mode: normalised with the batch statistics, which are held
  fixed -- see :mod:`hhld.torch.persample.engine` for what that means for the layers upstream).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .factors import Dense, Outer, SqNorm, compute_dtype

__all__ = ["linear_contribs", "matmul_contribs", "conv_contribs", "conv_sketch_contribs", "embedding_contribs",
           "norm_contribs", "rows3"]


def rows3(x: torch.Tensor) -> torch.Tensor:
    """``(B, ..., f) -> (B, T, f)``."""
    return x.reshape(x.shape[0], -1, x.shape[-1])


def linear_contribs(x, g, q_w, has_w=True, has_b=False):
    """``F.linear``: ``x (B, ..., in)``, ``g (B, ..., out)``; the weight's rows are ``q_w``."""
    out = {}
    g3 = rows3(g)
    if has_w:
        out["weight"] = Outer(g3, rows3(x), q_w)
    if has_b:
        out["bias"] = Dense(g3.sum(1) if g3.shape[1] > 1 else g3[:, 0])
    return out


def matmul_contribs(x, g, q_p):
    """``x @ P``: ``x (B, ..., in)``, ``g (B, ..., out)``, ``P (in, out)``: ``dP_i = sum_t x_it g_it^T``."""
    return {"weight": Outer(rows3(x), rows3(g), q_p)}


def _pad_amounts(padding, kernel_size, dilation):
    """Explicit ``(lo, hi)`` per spatial axis for ``padding`` as given to ``F.conv*d``."""
    nd = len(kernel_size)
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * nd
        # "same" (stride 1): total dilation*(k-1), the extra one on the high side, as torch does
        out = []
        for k, d in zip(kernel_size, dilation):
            tot = d * (k - 1)
            out.append((tot // 2, tot - tot // 2))
        return out
    return [(p, p) for p in padding]


def _tuple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def conv_patches(x, weight, stride, padding, dilation):
    """Unfolded input patches ``(B, L, C*k)`` of a 1-D / 2-D convolution (zero padding)."""
    nd = weight.dim() - 2
    ks = tuple(weight.shape[2:])
    stride, dilation = _tuple(stride, nd), _tuple(dilation, nd)
    pads = _pad_amounts(padding if isinstance(padding, str) else _tuple(padding, nd), ks, dilation)
    if nd == 1:
        x = x.unsqueeze(2)
        ks, stride, dilation, pads = (1,) + ks, (1,) + stride, (1,) + dilation, [(0, 0)] + pads
    sym = all(lo == hi for lo, hi in pads)
    if not sym:
        flat = []
        for lo, hi in reversed(pads):
            flat += [lo, hi]
        x = F.pad(x, flat)
        pad_arg = 0
    else:
        pad_arg = tuple(lo for lo, _ in pads)
    cols = F.unfold(x, ks, dilation=dilation, padding=pad_arg, stride=stride)  # (B, C*k, L)
    return cols.transpose(1, 2)


def conv_contribs(x, g, weight_shape, stride, padding, dilation, groups, has_w=True, has_b=False):
    """Exact per-sample contributions of a 1-D / 2-D convolution (any groups)."""
    out = {}
    B, q = g.shape[0], g.shape[1]
    g3 = g.reshape(B, q, -1)  # (B, out, L)
    if has_b:
        out["bias"] = Dense(g3.sum(2))
    if not has_w:
        return out
    w_like = torch.empty(weight_shape, device="meta")
    cols = conv_patches(x, w_like, stride, padding, dilation)  # (B, L, C*k)
    if groups == 1:
        out["weight"] = Outer(g3.transpose(1, 2), cols, q)
        return out
    G = groups
    L = cols.shape[1]
    ck = cols.shape[2] // G
    dt = compute_dtype(x, g)
    a = cols.reshape(B, L, G, ck).to(dt)
    gg = g3.reshape(B, G, q // G, L).to(dt)
    per = torch.einsum("bgol,blgp->bgop", gg, a)  # (B, G, out/G, C/G*k)
    out["weight"] = Dense(per.reshape((B,) + tuple(weight_shape)))
    return out


def conv_sketch_contribs(proj, g, has_b=False):
    """The random-projection estimate (see :mod:`hhld.torch.persample.sketch`): ``proj (B, k, L)`` the
    per-sample probe projections ``a_it . v_ij (+ c_ij)``, ``g (B, out, L...)``. One SqNorm for the
    (weight, bias) pair, reported under ``"weight"``."""
    g3 = g.reshape(g.shape[0], g.shape[1], -1)
    dt = compute_dtype(proj, g3)
    s = g3.detach().abs().amax().double()
    s = torch.where((s > 0) & torch.isfinite(s), s, torch.ones_like(s))
    t = torch.bmm(proj.to(dt), (g3.to(dt) / s.to(dt)).transpose(1, 2))  # (B, k, out)
    return {"weight": SqNorm(t.square().sum(2).mean(1).double() * (s * s))}


def embedding_contribs(ids, g, num_embeddings, padding_idx=None):
    """``F.embedding``: ``ids (B, ...)`` integer, ``g (B, ..., dim)``."""
    ids2 = ids.reshape(ids.shape[0], -1)
    g3 = g.reshape(g.shape[0], -1, g.shape[-1])
    if padding_idx is not None:
        keep = (ids2 != padding_idx).unsqueeze(-1)
        g3 = g3 * keep.to(g3.dtype)
    return {"weight": Outer(ids2.long(), g3, num_embeddings)}


def _affine(g, xhat, channel_dims, has_w, has_b, param_shape):
    """``sum g*xhat`` and ``sum g`` over every axis but the batch and the parameter's axes."""
    B = g.shape[0]
    dt = compute_dtype(g, xhat)
    g = g.to(dt)
    red = tuple(d for d in range(1, g.dim()) if d not in channel_dims)
    out = {}
    if has_w:
        gw = (g * xhat.to(dt)).sum(red) if red else g * xhat.to(dt)
        out["weight"] = Dense(gw.reshape((B,) + tuple(param_shape)))
    if has_b:
        gb = g.sum(red) if red else g
        out["bias"] = Dense(gb.reshape((B,) + tuple(param_shape)))
    return out


def norm_contribs(kind, x, g, args, has_w, has_b, param_shape):
    """Affine parameters of ``layer_norm`` / ``rms_norm`` / ``group_norm`` / ``instance_norm`` /
    ``batch_norm``. ``args`` are the op's non-tensor arguments as recorded by the engine."""
    dt = compute_dtype(x, g)
    xd = x.to(dt)
    if kind in ("layer_norm", "rms_norm"):
        nd = len(args["normalized_shape"])
        dims = tuple(range(x.dim() - nd, x.dim()))
        eps = args["eps"]
        if kind == "layer_norm":
            mean = xd.mean(dims, keepdim=True)
            var = xd.var(dims, unbiased=False, keepdim=True)
            xhat = (xd - mean) * torch.rsqrt(var + eps)
        else:
            if eps is None:  # torch's default: the epsilon of the op's compute type (float32 for half inputs)
                eps = torch.finfo(torch.float64 if x.dtype == torch.float64 else torch.float32).eps
            xhat = xd * torch.rsqrt(xd.square().mean(dims, keepdim=True) + eps)
        return _affine(g, xhat, dims, has_w, has_b, param_shape)
    if kind == "group_norm":
        B, C = x.shape[0], x.shape[1]
        G = args["num_groups"]
        xg = xd.reshape(B, G, -1)
        mean = xg.mean(2, keepdim=True)
        var = xg.var(2, unbiased=False, keepdim=True)
        xhat = ((xg - mean) * torch.rsqrt(var + args["eps"])).reshape(x.shape)
        return _affine(g, xhat, (1,), has_w, has_b, param_shape)
    if kind == "instance_norm":
        red = tuple(range(2, x.dim()))
        if args["use_input_stats"]:
            mean = xd.mean(red, keepdim=True)
            var = xd.var(red, unbiased=False, keepdim=True)
        else:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            mean = args["running_mean"].to(dt).reshape(shape)
            var = args["running_var"].to(dt).reshape(shape)
        xhat = (xd - mean) * torch.rsqrt(var + args["eps"])
        return _affine(g, xhat, (1,), has_w, has_b, param_shape)
    if kind == "batch_norm":
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if args["batch_stats"]:
            red = (0,) + tuple(range(2, x.dim()))
            mean = xd.mean(red, keepdim=True)
            var = xd.var(red, unbiased=False, keepdim=True)
        else:
            mean = args["running_mean"].to(dt).reshape(shape)
            var = args["running_var"].to(dt).reshape(shape)
        xhat = (xd - mean) * torch.rsqrt(var + args["eps"])
        return _affine(g, xhat, (1,), has_w, has_b, param_shape)
    raise AssertionError(kind)  # pragma: no cover


def sum_of_contribs(c, shape):
    """``sum_i`` of a contribution's per-sample gradients, shaped like the parameter (for the consistency
    check against ``p.grad``)."""
    if isinstance(c, Dense):
        return c.g.to(compute_dtype(c.g)).sum(0).reshape(shape)
    q = shape[0]
    p = math.prod(shape[1:]) if len(shape) > 1 else 1
    dt = compute_dtype(c.v)
    v = c.v.reshape(-1, c.v.shape[-1]).to(dt)
    if c.is_index:
        out = torch.zeros((q, p), dtype=dt, device=v.device)
        out.index_add_(0, c.u.reshape(-1), v)
    else:
        u = c.u.reshape(-1, c.u.shape[-1]).to(dt)
        blk = u.t() @ v
        if c.rows or blk.shape[0] != q:
            out = blk.new_zeros((q, p))
            out[c.rows:c.rows + blk.shape[0]] = blk
        else:
            out = blk
    return out.reshape(shape)
