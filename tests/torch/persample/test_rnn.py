"""Recurrent layers: BPTT over the batched gates against brute-force per-sample gradients."""
import pytest
import torch
from torch import nn

from hhld.torch.persample.rnn import RecomputeMismatch, rnn_contribs
from hhld.torch.persample.factors import per_sample_sq_norms


def brute(rnn, x, h0, use_state, batch_first):
    per = []
    B = x.shape[0] if batch_first else x.shape[1]
    for i in range(B):
        xi = x[i:i + 1] if batch_first else x[:, i:i + 1]
        hi = None if h0 is None else tuple(h[:, i:i + 1] for h in h0) if isinstance(h0, tuple) else h0[:, i:i + 1]
        out, st = rnn(xi, hi)
        loss = out.sin().sum() + (st[0] if isinstance(st, tuple) else st).cos().sum() * use_state
        if isinstance(st, tuple):
            loss = loss + st[1].square().sum() * use_state
        gs = torch.autograd.grad(loss, list(rnn.parameters()))
        per.append([(g ** 2).sum() for g in gs])
    return torch.tensor(per, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("layers,bidir", [(1, False), (2, True)])
@pytest.mark.parametrize("batch_first", [True, False])
def test_bptt_matches_per_sample_gradients(kind, layers, bidir, batch_first):
    torch.manual_seed(0)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU}.get(kind, nn.RNN)
    kw = {"nonlinearity": kind[4:]} if cls is nn.RNN else {}
    rnn = cls(3, 4, num_layers=layers, bidirectional=bidir, batch_first=batch_first, **kw).double()
    B, T, D = 3, 5, 2 if bidir else 1
    x = torch.randn(B, T, 3, dtype=torch.float64) if batch_first else torch.randn(T, B, 3, dtype=torch.float64)
    h0 = torch.randn(layers * D, B, 4, dtype=torch.float64)
    hx = (h0, torch.randn_like(h0)) if kind == "lstm" else h0
    ref = brute(rnn, x, hx, 1.0, batch_first)
    out, st = rnn(x, hx)
    outs = [out] + (list(st) if isinstance(st, tuple) else [st])
    loss = out.sin().sum() + outs[1].cos().sum() + (outs[2].square().sum() if kind == "lstm" else 0)
    grads = torch.autograd.grad(loss, outs)
    cs = rnn_contribs(kind, x, hx, list(rnn._flat_weights), True, layers, bidir, batch_first, outs, list(grads))
    shapes = [w.shape for w in rnn._flat_weights]
    got = torch.stack([per_sample_sq_norms([cs[k]], shapes[k]) for k in range(len(shapes))], 1)
    assert torch.allclose(got, ref, rtol=1e-9), (got - ref).abs().max()


def test_a_recomputation_that_differs_is_refused():
    rnn = nn.GRU(3, 4).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, hn = rnn(x)
    wrong = [out + 0.1, hn]
    with pytest.raises(RecomputeMismatch, match="differ from the training step"):
        rnn_contribs("gru", x, None, list(rnn._flat_weights), True, 1, False, False, wrong,
                     [torch.ones_like(out), None])


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("layers,bidir", [(1, False), (2, True)])
def test_packed_sequences_match_each_sequence_alone(kind, layers, bidir):
    """A packed batch of sequences of different lengths (the op's own sorted order): each sample's gradients
    against the sequence run alone, unpadded (its state held over the padded steps, as the op does)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(0)
    cls = {"lstm": nn.LSTM, "gru": nn.GRU}.get(kind, nn.RNN)
    kw = {"nonlinearity": kind[4:]} if cls is nn.RNN else {}
    rnn = cls(3, 4, num_layers=layers, bidirectional=bidir, **kw).double()
    D = 2 if bidir else 1
    lengths = torch.tensor([5, 4, 4, 2, 1])  # sorted, as the op receives them
    B = len(lengths)
    x = torch.randn(5, B, 3, dtype=torch.float64)
    h0 = torch.randn(layers * D, B, 4, dtype=torch.float64)
    hx = (h0, torch.randn_like(h0)) if kind == "lstm" else h0

    def loss_of(out_rows, st):
        s = st[0] if isinstance(st, tuple) else st
        return out_rows.sin().sum() + s.cos().sum() + (st[1].square().sum() if isinstance(st, tuple) else 0)

    ref = []
    for i in range(B):
        hi = tuple(h[:, i:i + 1] for h in hx) if isinstance(hx, tuple) else hx[:, i:i + 1]
        out, st = rnn(x[:lengths[i], i:i + 1], hi)
        ref.append([(g ** 2).sum() for g in torch.autograd.grad(loss_of(out, st), list(rnn.parameters()))])
    ref = torch.tensor(ref, dtype=torch.float64)
    packed = pack_padded_sequence(x, lengths)
    out, st = rnn(packed, hx)
    outs = [out.data] + (list(st) if isinstance(st, tuple) else [st])
    grads = torch.autograd.grad(loss_of(out.data, st), outs)
    cs = rnn_contribs(kind, packed.data, hx, list(rnn._flat_weights), True, layers, bidir, False, outs, list(grads),
                      batch_sizes=packed.batch_sizes)
    shapes = [w.shape for w in rnn._flat_weights]
    got = torch.stack([per_sample_sq_norms([cs[k]], shapes[k]) for k in range(len(shapes))], 1)
    assert torch.allclose(got, ref, rtol=1e-9), (got - ref).abs().max()


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("layers,bidir", [(1, False), (2, True)])
def test_lstm_with_projections(layers, bidir, packed):
    """``nn.LSTM(proj_size=P)``: the projection ``W_hr`` and every other weight, per sample, against each
    sequence run alone (also packed, of different lengths)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(0)
    rnn = nn.LSTM(3, 5, num_layers=layers, bidirectional=bidir, proj_size=2).double()
    D = 2 if bidir else 1
    lengths = torch.tensor([5, 4, 4, 2, 1]) if packed else torch.tensor([5] * 5)
    B = len(lengths)
    x = torch.randn(5, B, 3, dtype=torch.float64)
    hx = (torch.randn(layers * D, B, 2, dtype=torch.float64), torch.randn(layers * D, B, 5, dtype=torch.float64))

    def loss_of(out_rows, st):
        return out_rows.sin().sum() + st[0].cos().sum() + st[1].square().sum()

    ref = []
    for i in range(B):
        out, st = rnn(x[:lengths[i], i:i + 1], tuple(h[:, i:i + 1] for h in hx))
        ref.append([(g ** 2).sum() for g in torch.autograd.grad(loss_of(out, st), list(rnn.parameters()))])
    ref = torch.tensor(ref, dtype=torch.float64)
    if packed:
        p = pack_padded_sequence(x, lengths)
        out, st = rnn(p, hx)
        data, bs = p.data, p.batch_sizes
        out = out.data
    else:
        out, st = rnn(x, hx)
        data, bs = x, None
    outs = [out, st[0], st[1]]
    grads = torch.autograd.grad(loss_of(out, st), outs)
    cs = rnn_contribs("lstm", data, hx, list(rnn._flat_weights), True, layers, bidir, False, outs, list(grads),
                      batch_sizes=bs)
    shapes = [w.shape for w in rnn._flat_weights]
    assert len(cs) == len(shapes) == layers * D * 5
    got = torch.stack([per_sample_sq_norms([cs[k]], shapes[k]) for k in range(len(shapes))], 1)
    assert torch.allclose(got, ref, rtol=1e-9), (got - ref).abs().max()
