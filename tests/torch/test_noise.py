"""Gradient-noise statistics against a brute-force float64 per-sample loop."""
import math

import pytest
import torch
from torch import nn

from hhld.torch import gradient_noise_stats
from hhld.torch.persample import PerSampleSqNorms
from workloads import OpaqueScale


def reference(model, loss_fn, x, y, reduction="mean"):
    """Per-sample gradient loop in float64: (tr Sigma, unbiased |G|^2, |gbar|^2)."""
    params = [p for p in model.parameters() if p.requires_grad]
    B = x[0].shape[0] if isinstance(x, tuple) else x.shape[0]
    gs = []
    for i in range(B):
        xi = tuple(t[i:i + 1] for t in x) if isinstance(x, tuple) else x[i:i + 1]
        out = model(*xi) if isinstance(x, tuple) else model(xi)
        li = loss_fn(out, y[i:i + 1])
        g = torch.autograd.grad(li, params, allow_unused=True)
        gs.append(torch.cat([(gg if gg is not None else torch.zeros_like(p)).reshape(-1)
                             for gg, p in zip(g, params)]).double())
    G = torch.stack(gs)
    gbar = G.mean(0)
    tr = ((G - gbar) ** 2).sum() / (B - 1)
    return float(tr), float((gbar ** 2).sum() - tr / B), float((gbar ** 2).sum())


class SeqModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6, padding_idx=0)
        self.ln = nn.LayerNorm(6)
        self.lin = nn.Linear(6, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, ids):
        h = self.ln(self.emb(ids))            # (B, T, 6)
        h = torch.tanh(self.lin(h))           # sequence Linear
        h = h + torch.tanh(self.lin(h[..., :5] @ torch.ones(5, 6, dtype=h.dtype)))  # layer called twice
        return self.head(h.mean(1))


class ConvModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(2, 3, 3, padding=1)
        self.c2 = nn.Conv2d(1, 4, 3, stride=2, padding=1, dilation=1)
        self.fc = nn.Linear(3 * 7 + 4 * 3 * 3, 2)

    def forward(self, a, b):
        u = torch.tanh(self.c1(a)).flatten(1)
        v = torch.tanh(self.c2(b)).flatten(1)
        return self.fc(torch.cat([u, v], 1))


def _close(got, ref, rtol=1e-6, atol=1e-9):
    assert got == pytest.approx(ref, rel=rtol, abs=atol)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mlp_matches_loop(reduction):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    lf = nn.CrossEntropyLoss(reduction=reduction)
    st = gradient_noise_stats(model, lf, x, y, lr=0.1, loss_reduction=reduction)
    tr, gu, gb = reference(model, nn.CrossEntropyLoss(), x, y)
    _close(st.tr_sigma, tr)
    _close(st.grad_sq_norm_unbiased, gu)
    _close(st.batch_grad_sq_norm * (1 if reduction == "mean" else 1), gb)
    assert st.b_simple == pytest.approx(tr / gu, rel=1e-6)
    d = sum(p.numel() for p in model.parameters())
    assert st.D == pytest.approx(0.1 * tr / (2 * 10 * d), rel=1e-6)
    assert st.C == pytest.approx(gu / (st.D * d), rel=1e-6)
    assert set(st.estimator.values()) == {"exact:linear"}
    assert not any(p.grad is not None for p in model.parameters())  # .grad untouched


def test_sequence_embedding_layernorm_shared_call():
    torch.manual_seed(1)
    model = SeqModel().double()
    ids = torch.randint(0, 11, (7, 5))
    ids[0, :2] = 0  # padding positions
    ids[1] = 3      # repeated token
    y = torch.randint(0, 3, (7,))
    st = gradient_noise_stats(model, nn.CrossEntropyLoss(), ids, y)
    tr, gu, _ = reference(model, nn.CrossEntropyLoss(), ids, y)
    _close(st.tr_sigma, tr)
    _close(st.grad_sq_norm_unbiased, gu)
    kinds = set(st.estimator.values())
    assert {"exact:embedding", "exact:layer_norm", "exact:linear"} <= kinds


def test_conv_matches_loop():
    torch.manual_seed(2)
    model = ConvModel().double()
    a, b = torch.randn(6, 2, 7, dtype=torch.float64), torch.randn(6, 1, 6, 6, dtype=torch.float64)
    y = torch.randn(6, 2, dtype=torch.float64)
    st = gradient_noise_stats(model, nn.MSELoss(), (a, b), y)
    # MSELoss(mean) averages over 2 outputs as well: still a mean of per-sample means
    tr, gu, _ = reference(model, nn.MSELoss(), (a, b), y)
    _close(st.tr_sigma, tr)
    _close(st.grad_sq_norm_unbiased, gu)
    assert st.estimator["c1.weight"] == "exact:conv" and st.estimator["c2.bias"] == "exact:conv"


class Odd(nn.Module):
    """A parameter used inside a custom autograd Function (no per-sample rule) next to a Linear."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4, dtype=torch.float64))
        self.lin = nn.Linear(4, 2).double()

    def forward(self, x):
        return self.lin(OpaqueScale.apply(x, self.scale))


class RawOdd(nn.Module):
    """The same with a plain ``x * scale``: the engine covers it exactly."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4, dtype=torch.float64))
        self.lin = nn.Linear(4, 2).double()

    def forward(self, x):
        return self.lin(x * self.scale)


def test_raw_parameter_is_exact_without_fallback():
    torch.manual_seed(3)
    model = RawOdd()
    x, y = torch.randn(9, 4, dtype=torch.float64), torch.randn(9, 2, dtype=torch.float64)
    st = gradient_noise_stats(model, nn.MSELoss(), x, y, fallback="error")
    tr, gu, _ = reference(model, nn.MSELoss(), x, y)
    _close(st.tr_sigma, tr)
    _close(st.grad_sq_norm_unbiased, gu)
    assert st.estimator["scale"].startswith("exact:broadcast")


def _fixed_stats_reference(model, lf, x, y):
    """Per-sample gradients with every batch norm normalising by the full batch's statistics (held fixed)."""
    import copy
    twin = copy.deepcopy(model)
    stats = {}
    hs = [m.register_forward_hook(lambda m, i, o: stats.__setitem__(m, (i[0].mean(0), i[0].var(0, unbiased=False))))
          for m in twin.modules() if isinstance(m, nn.BatchNorm1d)]
    twin(x)
    for h in hs:
        h.remove()
    for m, (mu, var) in stats.items():
        m.eval()
        m.running_mean.copy_(mu.detach())
        m.running_var.copy_(var.detach())
    return reference(twin, lf, x, y)


def test_batchnorm_upstream_is_coupled_and_func_fallback_holds_statistics_fixed():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)).double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    st = gradient_noise_stats(model, nn.MSELoss(), x, y)
    # the Linear before the batch norm is coupled: the func fallback holds the batch statistics fixed
    assert st.estimator["0.weight"] == "func; batch statistics held fixed"
    assert "coupled" in st.fallback_reasons["0.weight"]
    assert st.estimator["1.weight"] == "exact:batch_norm" and st.estimator["3.weight"] == "exact:linear"
    tr, gu, _ = _fixed_stats_reference(model, nn.MSELoss(), x, y)
    _close(st.tr_sigma, tr)
    _close(st.grad_sq_norm_unbiased, gu)


def test_fallback_half_batch_unbiased():
    """Half-batch estimator (the custom Function defeats torch.func): unbiased, so its mean over many random
    batches matches."""
    torch.manual_seed(4)
    model = Odd()
    X, Y = torch.randn(400, 4, dtype=torch.float64), torch.randn(400, 2, dtype=torch.float64)
    ests = []
    for k in range(100):
        idx = torch.randperm(400)[:16]
        st = gradient_noise_stats(model, nn.MSELoss(), X[idx], Y[idx])
        assert st.estimator["scale"] == "half_batch"
        ests.append(st.tr_sigma)
    assert "torch.func failed" in st.fallback_reasons["scale"]
    tr_full, _, _ = reference(model, nn.MSELoss(), X, Y)
    m = sum(ests) / len(ests)
    se = (sum((e - m) ** 2 for e in ests) / (len(ests) - 1) / len(ests)) ** 0.5
    assert abs(m - tr_full) < 4 * se + 1e-9


def test_errors():
    with pytest.raises(ValueError, match="no trainable parameters"):
        m = nn.Linear(2, 1)
        m.requires_grad_(False)
        gradient_noise_stats(m, nn.MSELoss(), torch.randn(4, 2), torch.randn(4, 1))
    with pytest.raises(ValueError, match="at least 2"):
        gradient_noise_stats(nn.Linear(2, 1), nn.MSELoss(), torch.randn(1, 2), torch.randn(1, 1))
    with pytest.raises(ValueError, match="no per-sample estimator.*scale"):
        gradient_noise_stats(Odd(), nn.MSELoss(), torch.randn(4, 4, dtype=torch.float64),
                             torch.randn(4, 2, dtype=torch.float64), fallback="error")
    with pytest.raises(ValueError, match="loss_reduction"):
        gradient_noise_stats(nn.Linear(2, 1), nn.MSELoss(), torch.randn(4, 2), torch.randn(4, 1),
                             loss_reduction="none")
    m = nn.Linear(2, 1)
    with torch.no_grad():
        m.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError):
        gradient_noise_stats(m, nn.MSELoss(), torch.randn(4, 2), torch.randn(4, 1))


def test_gram_and_materialised_paths_agree():
    """One Outer factor: the Gram path and the formed per-sample gradient give the same norms."""
    from hhld.torch.persample.factors import Outer, _materialise, per_sample_sq_norms
    for T, p, q in ((5, 2, 40), (2, 30, 40)):
        a, g = torch.randn(3, T, p, dtype=torch.float64), torch.randn(3, T, q, dtype=torch.float64)
        ref = (torch.einsum("btp,btq->bqp", a, g) ** 2).sum((1, 2))
        o = Outer(g, a, q)
        assert torch.allclose(per_sample_sq_norms([o], (q, p)), ref)
        assert torch.allclose(_materialise([o], [], (q, p), 3, torch.float64), ref)


def test_hooks_record_one_pass_per_backward():
    model = nn.Linear(3, 2)
    h = PerSampleSqNorms(model).attach()
    for _ in range(3):
        model(torch.randn(5, 3)).sum().backward()
    h.detach()
    assert len(h.passes) == 3 and all(p.shape == (5,) for p in h.passes)


def test_a_coupling_other_than_batch_norm_falls_back_to_half_batches():
    """Centring over the batch couples the samples upstream; torch.func would take each sample alone (its centred
    activation would be zero), so the 'auto' fallback uses half batches there, and 'func' refuses."""
    class Centred(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2 = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.l1(x).tanh()
            return self.l2(h - h.mean(0, keepdim=True))

    torch.manual_seed(0)
    model = Centred().double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 2, (16,))
    st = gradient_noise_stats(model, nn.functional.cross_entropy, x, y)
    assert st.estimator == {"l1.weight": "half_batch", "l1.bias": "half_batch", "l2.weight": "exact:linear",
                            "l2.bias": "exact:linear"}
    assert "coupled" in st.fallback_reasons["l1.weight"] and "used half_batch" in st.fallback_reasons["l1.weight"]
    with pytest.raises(ValueError, match="not defined for 'l1.weight'.*use fallback='half_batch'"):
        gradient_noise_stats(model, nn.functional.cross_entropy, x, y, fallback="func")
