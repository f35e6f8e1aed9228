"""Per-sample gradients of ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` weights, exact.

The fused recurrent op hides the gate pre-activations ``z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh``
whose gradients give every weight's per-sample gradient as a sum of outer products:
``dW_ih_i = sum_t dz_it x_it^T``, ``dW_hh_i = sum_t dzh_it h_i,t-1^T``, ``db_ih_i = sum_t dz_it``,
``db_hh_i = sum_t dzh_it`` (``dzh = dz`` for the LSTM and the plain RNN; for the GRU the hidden-side
gradient of the candidate gate is ``r_t * dz_n``).

``dz`` is recovered by back-propagation through time written out with the gate equations:

* the hidden states ``h_t`` are known (the op's outputs; for lower layers of a stacked RNN, one
  more fused forward pass), so every gate of every step comes from one batched matrix product,
  and the LSTM's cell states from one cheap scan ``c_t = f_t c_{t-1} + i_t g_t``;
* then one reverse sweep: per step one ``(B, G H) x (G H, H)`` product and a few elementwise ops
  (``dh_{t-1} = dz_t W_hh + ...``, ``dc_{t-1} = dc_t f_t``), from the gradients the outputs
  (``output``, ``h_n``, ``c_n``) received in the training step's backward pass.

The recomputed hidden states are compared with the training step's (relative Frobenius difference
below 1e-4; 5e-2 when the step ran under autocast in a half type, whose recurrence rounds to about
3 digits); a mismatch (e.g. dropout masks drawn otherwise than replayed) leaves the weights
uncovered with that reason. Dropout between layers (training, CPU) is replayed: the op draws each mask
from the CPU generator on the layer's output (time-major, or the packed rows); the engine keeps the
generator's state from just before the op and draws the same masks again.

An LSTM with projections (``proj_size``) carries ``h_t = W_hr (o_t * tanh(c_t))``: the sweep takes the
gradient of ``h_t`` through ``W_hr`` to the cell, and ``dW_hr_i = sum_t dh_it (o_it * tanh(c_it))^T``.

Packed sequences (``pack_padded_sequence``): the op's rows are laid out as padded ``(T, B, .)`` steps with
a mask of the valid ones; on a padded step each sample's state is held (``h_t = h_{t-1}``, ``c_t = c_{t-1}``),
which is what the op does (a sequence's last state is its ``h_n``; the reverse direction starts at its own
last step), so the gradient passes such a step unchanged and adds nothing to the weights.
"""
from __future__ import annotations

import contextlib

import torch

from .factors import Dense, Outer

__all__ = ["RNN_OPS", "rnn_contribs", "RecomputeMismatch"]

#: fused op name -> gates per hidden unit
RNN_OPS = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


class RecomputeMismatch(RuntimeError):
    pass


def _check(name, a, b, rtol):
    b = b.to(a.dtype)
    err = float((a - b).norm())
    ref = float(b.norm())
    if not err <= rtol * max(ref, 1e-30):
        raise RecomputeMismatch(f"the recomputed {name} differ from the training step's by {err / max(ref, 1e-300):.2g} "
                                "(relative; dropout masks drawn otherwise, or another random op inside the recurrent layer?)")


def _gates(kind, x, hprev, w_ih, w_hh, b_ih, b_hh, H):
    """Every step's gates at once (``x``, ``hprev``: ``(T, B, .)``)."""
    gi = x @ w_ih.t()
    gh = hprev @ w_hh.t()
    if b_ih is not None:
        gi = gi + b_ih
        gh = gh + b_hh
    if kind == "lstm":
        z = gi + gh
        i, f, g, o = torch.sigmoid(z[..., :H]), torch.sigmoid(z[..., H:2 * H]), torch.tanh(z[..., 2 * H:3 * H]), \
            torch.sigmoid(z[..., 3 * H:])
        return {"i": i, "f": f, "g": g, "o": o}
    if kind == "gru":
        r = torch.sigmoid(gi[..., :H] + gh[..., :H])
        zz = torch.sigmoid(gi[..., H:2 * H] + gh[..., H:2 * H])
        n = torch.tanh(gi[..., 2 * H:] + r * gh[..., 2 * H:])
        return {"r": r, "z": zz, "n": n, "ghn": gh[..., 2 * H:]}
    pre = gi + gh
    return {"h": torch.tanh(pre) if kind == "rnn_tanh" else torch.relu(pre)}


def _hold(hs, m, h0):
    """``hs (T, B, H)`` with each masked step's state held from the step before (``h0`` before the first)."""
    out = torch.empty_like(hs)
    prev = h0
    for t in range(hs.shape[0]):
        prev = torch.where(m[t], hs[t], prev)
        out[t] = prev
    return out


def _direction(kind, x, h0, c0, w, H, hs_ref, g_out, g_hn, g_cn, rtol, m=None):
    """One layer, one direction (in its own time order): ``(dz, dzh, hprev, dx_cot)``.

    ``x (T, B, F)``; ``hs_ref (T, B, H)`` the step's hidden states; ``g_out (T, B, H)`` / ``g_hn``, ``g_cn``
    ``(B, H)`` the gradients they received (or None). ``m (T, B, 1)``: the valid steps of a packed batch (a
    masked step holds the state: ``hs_ref`` holds it there too), ``None``: every step."""
    w_ih, w_hh, b_ih, b_hh = w[:4]
    w_hr = w[4] if len(w) > 4 else None  # an LSTM's projection (proj_size): h = W_hr (o * tanh(c))
    T, B = x.shape[0], x.shape[1]
    Ph = w_hh.shape[1]  # the hidden state's size (proj_size, else H)
    hprev = torch.cat([h0.unsqueeze(0), hs_ref[:-1]], 0)
    gt = _gates(kind, x, hprev, w_ih, w_hh, b_ih, b_hh, H)
    mf = m.to(x.dtype) if m is not None else None
    if kind == "lstm":
        i, f, g, o = gt["i"], gt["f"], gt["g"], gt["o"]
        ig = i * g
        cs = torch.empty_like(ig)
        c = c0
        for t in range(T):
            c = torch.addcmul(ig[t], f[t], c) if m is None else torch.where(m[t], torch.addcmul(ig[t], f[t], c), c)
            cs[t] = c
        tc = torch.tanh(cs)
        htil = o * tc
        h_re = htil if w_hr is None else htil @ w_hr.t()
        cprev = torch.cat([c0.unsqueeze(0), cs[:-1]], 0)
        A = o * (1 - tc * tc)                                        # dc from dh
        P = torch.cat([g * i * (1 - i), cprev * f * (1 - f), i * (1 - g * g)], 2)  # dz_{i,f,g} = dc * P
        Po = tc * o * (1 - o)                                        # dz_o = dh * Po
    elif kind == "gru":
        r, zz, n, ghn = gt["r"], gt["z"], gt["n"], gt["ghn"]
        h_re = (1 - zz) * n + zz * hprev
        Q1 = (1 - zz) * (1 - n * n)                                  # dnpre = dh * Q1
        Q2 = (hprev - n) * zz * (1 - zz)                             # dzpre = dh * Q2
        Q3 = ghn * r * (1 - r)                                       # drpre = dnpre * Q3
    else:
        h_re = gt["h"]
        Dz = (1 - h_re * h_re) if kind == "rnn_tanh" else (h_re > 0).to(h_re.dtype)
    if m is not None:  # a held step: no gate gets a gradient, and the state's gradient passes it unchanged
        h_re = torch.where(m, h_re, hs_ref)
        if kind == "lstm":
            A, P, Po, f = A * mf, P * mf, Po * mf, torch.where(m, f, torch.ones_like(f))
        elif kind == "gru":
            Q1, Q2, zz = Q1 * mf, Q2 * mf, torch.where(m, zz, torch.ones_like(zz))
        else:
            Dz = Dz * mf
        hold = (1 - mf).unbind(0)
    _check("hidden states", h_re, hs_ref, rtol)
    G = RNN_OPS[kind]
    dz = x.new_empty((T, B, G * H))
    dzh = dz if kind != "gru" else x.new_empty((T, B, G * H))
    dh_next = g_hn.clone() if g_hn is not None else x.new_zeros((B, Ph))
    dc_next = g_cn.clone() if (kind == "lstm" and g_cn is not None) else x.new_zeros((B, H))
    # the sweep writes into preallocated buffers and per-step views made once (no allocation per step)
    dh = x.new_empty((B, Ph))
    zero = x.new_zeros((B, Ph))
    proj = None
    g_steps = g_out.unbind(0) if g_out is not None else [zero] * T
    dz_steps, dzh_steps = dz.unbind(0), dzh.unbind(0)
    if kind == "lstm":
        dc = x.new_empty((B, H))
        A_s, P_s, Po_s, f_s = A.unbind(0), P.unbind(0), Po.unbind(0), f.unbind(0)
        if w_hr is not None:  # the gradient of o * tanh(c), through the projection, and each step's dh kept
            dht, dhs = x.new_empty((B, H)), x.new_empty((T, B, Ph))
            dhs_s = dhs.unbind(0)
        for t in range(T - 1, -1, -1):
            torch.add(dh_next, g_steps[t], out=dh)
            dhc = dh
            if w_hr is not None:
                torch.mm(dh, w_hr, out=dht)
                dhs_s[t].copy_(dh if m is None else dh * mf[t])
                dhc = dht
            torch.addcmul(dc_next, dhc, A_s[t], out=dc)
            d = dz_steps[t]
            torch.mul(P_s[t].view(B, 3, H), dc.unsqueeze(1), out=d[:, :3 * H].view(B, 3, H))
            torch.mul(dhc, Po_s[t], out=d[:, 3 * H:])
            torch.mul(dc, f_s[t], out=dc_next)
            torch.mm(d, w_hh, out=dh_next)
            if m is not None:
                dh_next.addcmul_(dh, hold[t])
    elif kind == "gru":
        Q1_s, Q2_s, Q3_s, r_s, z_s = Q1.unbind(0), Q2.unbind(0), Q3.unbind(0), r.unbind(0), zz.unbind(0)
        for t in range(T - 1, -1, -1):
            torch.add(dh_next, g_steps[t], out=dh)
            d, dh_ = dz_steps[t], dzh_steps[t]
            dnpre = d[:, 2 * H:]
            torch.mul(dh, Q1_s[t], out=dnpre)
            torch.mul(dh, Q2_s[t], out=d[:, H:2 * H])
            torch.mul(dnpre, Q3_s[t], out=d[:, :H])
            dh_[:, :2 * H].copy_(d[:, :2 * H])
            torch.mul(dnpre, r_s[t], out=dh_[:, 2 * H:])
            torch.mm(dh_, w_hh, out=dh_next)
            dh_next.addcmul_(dh, z_s[t])
    else:
        Dz_s = Dz.unbind(0)
        for t in range(T - 1, -1, -1):
            torch.add(dh_next, g_steps[t], out=dh)
            torch.mul(dh, Dz_s[t], out=dz_steps[t])
            torch.mm(dz_steps[t], w_hh, out=dh_next)
            if m is not None:
                dh_next.addcmul_(dh, hold[t])
    if w_hr is not None:
        proj = (dhs, htil)
    dx = dz @ w_ih  # the gradient the layer's input received (the layer below's output gradient)
    return dz, dzh, hprev, dx, proj


def _layer_inputs(op, inputs, layer_out, masks, num_layers, D, h0, c0, lstm, wl, has_biases, bidirectional, mask,
                  batch_sizes, dropout, op_dtype):
    """The outputs of the layers below the last (one fused forward each) and the inputs of the layers above
    them, through dropout's masks when ``dropout`` is given (drawn as the op draws them: on the packed rows, or
    on the time-major steps)."""
    for layer in range(num_layers - 1):
        sl = slice(layer * D, (layer + 1) * D)
        state = (h0[sl].contiguous(), c0[sl].contiguous()) if lstm else h0[sl].contiguous()
        lw = [t for d in range(D) for t in wl(layer, d) if t is not None]
        if mask is None:
            o = op(inputs[-1], state, lw, has_biases, 1, 0.0, False, bidirectional, False)[0]
        else:
            o = op(inputs[-1][mask], batch_sizes, state, lw, has_biases, 1, 0.0, False, bidirectional)[0]
        nxt = o
        if dropout is not None:
            # drawn on a tensor of the op's own dtype and shape, as it drew them
            mult = torch.dropout(torch.ones_like(o, dtype=op_dtype), dropout[0], True).to(o.dtype)
            nxt = o * mult
            masks[layer] = _padded(mult, mask) if mask is not None else mult
        if mask is not None:
            o, nxt = _padded(o, mask), _padded(nxt, mask)
        layer_out[layer] = o
        inputs.append(nxt)


def _padded(data, mask):
    """Packed rows ``(N, .)`` as padded steps ``(T, B, .)`` (zeros where ``mask (T, B)`` is False)."""
    out = data.new_zeros(mask.shape + data.shape[1:])
    out[mask] = data
    return out


def rnn_contribs(kind, x, hx, weights, has_biases, num_layers, bidirectional, batch_first, outs, grads,
                 rtol=1e-4, batch_sizes=None, dropout=None):
    """Contributions ``{index into weights: Contribution}``.

    ``x``: the op's input; ``hx``: initial state (tensor, or ``(h0, c0)`` for the LSTM, or None);
    ``weights``: the flat weight list as passed to the op; ``outs``: its outputs (output, h_n[, c_n]);
    ``grads``: their gradients (``None`` for an output that received none). ``batch_sizes``: a packed
    sequence's (``x`` and the output are then its rows ``(N, .)``, in the op's sorted order of samples).
    ``dropout``: ``(p, state)`` of dropout between layers in training, ``state`` the CPU generator's state
    just before the op: the masks are drawn again from it, as the op drew them (checked by the hidden states).
    """
    G = RNN_OPS[kind]
    D = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    if kind == "lstm" and len(weights) == num_layers * D * (per + 1):
        per += 1  # each layer and direction also has W_hr (proj_size > 0)
    elif len(weights) != num_layers * D * per:
        raise RecomputeMismatch(f"{len(weights)} weights for {num_layers} layer(s) of {kind}: not understood")
    has_proj = per in (3, 5)
    mask = None
    if batch_sizes is not None:
        bs = batch_sizes.to("cpu", torch.int64)
        mask = (torch.arange(int(bs[0]))[None, :] < bs[:, None]).to(x.device)  # (T, B): the valid steps
        xs = _padded(x, mask)
    else:
        xs = x.transpose(0, 1) if batch_first else x  # (T, B, F)
    T, B = xs.shape[0], xs.shape[1]
    H = weights[0].shape[0] // G   # the gates' hidden size
    Ph = weights[1].shape[1]       # the hidden state's (proj_size with projections)
    dt = torch.float64 if xs.dtype == torch.float64 else torch.float32
    lstm = kind == "lstm"
    with torch.no_grad():
        if hx is None:
            h0 = xs.new_zeros((num_layers * D, B, Ph), dtype=dt)
            c0 = xs.new_zeros((num_layers * D, B, H), dtype=dt) if lstm else None
        elif lstm:
            h0, c0 = hx[0].to(dt), hx[1].to(dt)
        else:
            h0, c0 = hx.to(dt), None
        ws = [w.detach().to(dt) for w in weights]

        def wl(layer, d):
            b = (layer * D + d) * per
            return (ws[b], ws[b + 1], ws[b + 2] if has_biases else None, ws[b + 3] if has_biases else None) + (
                (ws[b + per - 1],) if has_proj else ())

        out_ref = outs[0].detach().to(dt)
        if mask is not None:
            out_ref = _padded(out_ref, mask)
        elif batch_first:
            out_ref = out_ref.transpose(0, 1)
        # the input of every layer: layer 0's is x; the others come from one fused forward per layer
        inputs = [xs.detach().to(dt)]
        layer_out = [None] * num_layers
        layer_out[-1] = out_ref
        op = getattr(torch, kind)
        masks = [None] * num_layers  # masks[l]: dropout's multiplier on layer l's output (the input of l + 1)
        replay = torch.random.fork_rng(devices=[]) if dropout is not None else contextlib.nullcontext()
        with replay:
            if dropout is not None:
                torch.set_rng_state(dropout[1])
            _layer_inputs(op, inputs, layer_out, masks, num_layers, D, h0, c0, lstm, wl, has_biases, bidirectional,
                          mask, batch_sizes, dropout, outs[0].dtype)
        g_out = grads[0]
        if g_out is not None:
            g_out = _padded(g_out.to(dt), mask) if mask is not None else (
                g_out.transpose(0, 1) if batch_first else g_out).to(dt)
        m3 = mask.unsqueeze(-1) if mask is not None else None
        g_hn = grads[1].to(dt) if len(grads) > 1 and grads[1] is not None else None
        g_cn = grads[2].to(dt) if lstm and len(grads) > 2 and grads[2] is not None else None
        contribs = {}
        cot = g_out  # the gradient of the current layer's output (T, B, D*H)
        for layer in range(num_layers - 1, -1, -1):
            xin = inputs[layer]
            dx_total = None
            for d in range(D):
                k = layer * D + d
                hs = layer_out[layer][:, :, d * Ph:(d + 1) * Ph]
                g_o = cot[:, :, d * Ph:(d + 1) * Ph] if cot is not None else None
                xi, mi = xin, m3
                if d == 1:  # the reverse direction runs forward in reversed time
                    hs, xi = hs.flip(0), xin.flip(0)
                    g_o = g_o.flip(0) if g_o is not None else None
                    mi = m3.flip(0) if m3 is not None else None
                if mi is not None:  # a packed batch: each sample's state held over its padded steps
                    hs = _hold(hs, mi, h0[k])
                dz, dzh, hprev, dx, proj = _direction(kind, xi, h0[k], c0[k] if lstm else None, wl(layer, d), H, hs,
                                                      g_o, g_hn[k] if g_hn is not None else None,
                                                      g_cn[k] if g_cn is not None else None, rtol, mi)
                if d == 1:
                    dz, dzh, hprev, dx, xi = dz.flip(0), dzh.flip(0), hprev.flip(0), dx.flip(0), xin
                    proj = tuple(t.flip(0) for t in proj) if proj is not None else None
                b = k * per
                dzB, dzhB = dz.transpose(0, 1), dzh.transpose(0, 1)
                contribs[b] = Outer(dzB, xi.transpose(0, 1), G * H)
                contribs[b + 1] = Outer(dzhB, hprev.transpose(0, 1), G * H)
                if has_biases:
                    contribs[b + 2] = Dense(dzB.sum(1))
                    contribs[b + 3] = Dense(dzhB.sum(1))
                if proj is not None:
                    contribs[b + per - 1] = Outer(proj[0].transpose(0, 1), proj[1].transpose(0, 1), Ph)
                dx_total = dx if dx_total is None else dx_total + dx
            cot = dx_total if layer == 0 or masks[layer - 1] is None else dx_total * masks[layer - 1]
        if not any(gr is not None for gr in grads[:3]):
            return {}
    return contribs
