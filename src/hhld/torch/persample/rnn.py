"""Per-sample gradients of ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` weights, exact.

The fused recurrent op hides the gate pre-activations ``z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh``
whose gradients give every weight's per-sample gradient as a sum of outer products:
``dW_ih_i = sum_t dz_it x_it^T``, ``dW_hh_i = sum_t dz_it h_i,t-1^T``, ``db_i = sum_t dz_it``
(for the GRU the hidden-side gradient of the candidate gate is ``r_t * dz_n``). To get ``dz`` at
the cost of one more fused forward/backward, the op is run again layer by layer with the input
widened by zero columns ``e_t`` that enter the gates through an identity block
(``W_ih' = [W_ih, I]``): then ``dL/de_t = dz_t``. The recomputed outputs are compared with the
ones of the training step (a mismatch, e.g. inter-layer dropout that cannot be replayed, leaves
the weights uncovered with that reason).
"""
from __future__ import annotations

import torch

from .factors import Dense, Outer

__all__ = ["RNN_OPS", "rnn_contribs", "RecomputeMismatch"]

#: fused op name -> gates per hidden unit
RNN_OPS = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


class RecomputeMismatch(RuntimeError):
    pass


def _op(kind):
    return getattr(torch, kind)


def rnn_contribs(kind, x, hx, weights, has_biases, num_layers, bidirectional, batch_first, outs, grads,
                 rtol=1e-4, atol=1e-30):
    """Contributions ``{index into weights: Contribution}``.

    ``x``: the op's input; ``hx``: initial state (tensor, or ``(h0, c0)`` for the LSTM, or None);
    ``weights``: the flat weight list as passed to the op; ``outs``: its outputs (output, h_n[, c_n]);
    ``grads``: their gradients (``None`` for an output that received none).
    """
    G = RNN_OPS[kind]
    D = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    if len(weights) != num_layers * D * per:
        raise RecomputeMismatch("projection weights (proj_size > 0) are not supported")
    xs = x.transpose(0, 1) if batch_first else x  # (T, B, F)
    T, B = xs.shape[0], xs.shape[1]
    H = weights[1].shape[1]
    dt = torch.float64 if xs.dtype == torch.float64 else torch.float32
    lstm = kind == "lstm"
    if hx is None:
        h0 = xs.new_zeros((num_layers * D, B, H), dtype=dt)
        c0 = h0 if lstm else None
    elif lstm:
        h0, c0 = hx[0].to(dt), hx[1].to(dt)
    else:
        h0, c0 = hx.to(dt), None
    op = _op(kind)
    inp = xs.detach().to(dt)
    es, layer_in, layer_outs, hns, cns = [], [], [], [], []
    with torch.enable_grad():
        for layer in range(num_layers):
            F_in = inp.shape[2]
            e = inp.new_zeros((T, B, D * G * H), requires_grad=True)
            aug = torch.cat([inp, e], 2)
            ws = []
            for d in range(D):
                base = (layer * D + d) * per
                w_ih = weights[base].detach().to(dt)
                eye = torch.zeros((G * H, D * G * H), dtype=dt, device=inp.device)
                eye[:, d * G * H:(d + 1) * G * H] = torch.eye(G * H, dtype=dt, device=inp.device)
                ws.append(torch.cat([w_ih, eye], 1))
                ws.append(weights[base + 1].detach().to(dt))
                if has_biases:
                    ws.append(weights[base + 2].detach().to(dt))
                    ws.append(weights[base + 3].detach().to(dt))
            sl = slice(layer * D, (layer + 1) * D)
            h_l = (h0[sl].contiguous(), c0[sl].contiguous()) if lstm else h0[sl].contiguous()
            res = op(aug, h_l, ws, has_biases, 1, 0.0, False, bidirectional, False)
            out_l = res[0]
            es.append(e)
            layer_in.append(inp)
            layer_outs.append(out_l)
            hns.append(res[1])
            if lstm:
                cns.append(res[2])
            inp = out_l
            del F_in
        out = layer_outs[-1]
        hn = torch.cat(hns, 0)
        cn = torch.cat(cns, 0) if lstm else None
    # the recomputation must reproduce the training step's outputs
    ref_out = outs[0].detach()
    ref_out = ref_out.transpose(0, 1) if batch_first else ref_out
    checks = [(out, ref_out), (hn, outs[1].detach())] + ([(cn, outs[2].detach())] if lstm else [])
    for a, b in checks:
        b = b.to(a.dtype)
        err = float((a - b).norm())
        ref = float(b.norm())
        if not err <= rtol * max(ref, atol):
            raise RecomputeMismatch(f"the recomputed outputs differ from the training step's by {err / max(ref, 1e-300):.2g} "
                                    "(relative; dropout between layers, or another random op inside the recurrent "
                                    "layer?)")
    g_out = grads[0]
    if g_out is not None and batch_first:
        g_out = g_out.transpose(0, 1)
    targets, cots = [], []
    for t, gr in ((out, g_out), (hn, grads[1])) + (((cn, grads[2]),) if lstm else ()):
        if gr is not None:
            targets.append(t)
            cots.append(gr.to(dt))
    if not targets:
        return {}
    dzs = torch.autograd.grad(targets, es, cots, allow_unused=True)
    contribs = {}
    for layer in range(num_layers):
        dz_all = dzs[layer]
        if dz_all is None:
            continue
        xin = layer_in[layer].transpose(0, 1)  # (B, T, F)
        out_l = layer_outs[layer].detach()
        for d in range(D):
            base = (layer * D + d) * per
            dz = dz_all[:, :, d * G * H:(d + 1) * G * H].transpose(0, 1)  # (B, T, G*H)
            hseq = out_l[:, :, d * H:(d + 1) * H]  # (T, B, H): h_t of this direction
            h_init = h0[layer * D + d].unsqueeze(0)
            if d == 0:
                hprev = torch.cat([h_init, hseq[:-1]], 0)
            else:  # the reverse direction reads h_{t+1}
                hprev = torch.cat([hseq[1:], h_init], 0)
            hprev = hprev.transpose(0, 1)  # (B, T, H)
            dzh = dz
            if kind == "gru":
                # r_t = sigmoid(W_ir x + b_ir + W_hr h + b_hr); dgh_n = r_t * dgi_n
                w_ih, w_hh = weights[base].detach().to(dt), weights[base + 1].detach().to(dt)
                gi = xin @ w_ih[:H].t()
                gh = hprev @ w_hh[:H].t()
                if has_biases:
                    gi = gi + weights[base + 2].detach().to(dt)[:H]
                    gh = gh + weights[base + 3].detach().to(dt)[:H]
                r = torch.sigmoid(gi + gh)
                dzh = torch.cat([dz[..., :2 * H], r * dz[..., 2 * H:]], 2)
            contribs[base] = Outer(dz, xin, G * H)
            contribs[base + 1] = Outer(dzh, hprev, G * H)
            if has_biases:
                contribs[base + 2] = Dense(dz.sum(1))
                contribs[base + 3] = Dense(dzh.sum(1))
    return contribs
