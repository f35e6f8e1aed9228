"""validate.experiments._train: the models and the float64 gradient statistics."""
from __future__ import annotations

import pytest
import torch

from hhld.validate.experiments import _train


def test_modadd_mlp_matches_linear_on_one_hot():
    torch.manual_seed(0)
    p, w = 11, 8
    m = _train.ModAddMLP(p, w, "relu")
    x = torch.tensor([[1, 2], [10, 0], [3, 3]])
    onehot = torch.cat([torch.nn.functional.one_hot(x[:, 0], p), torch.nn.functional.one_hot(x[:, 1], p)], 1).float()
    W = torch.cat([m.emb_a.weight, m.emb_b.weight], 0)  # (2p, w)
    ref = m.out(torch.relu(onehot @ W + m.bias))
    assert torch.allclose(m(x), ref, atol=1e-6)


def test_transformer_shapes_and_gradient():
    torch.manual_seed(0)
    m = _train.ModAddTransformer(7, d_model=16, n_heads=2, d_head=8, d_mlp=32)
    x = torch.tensor([[1, 2], [6, 0], [3, 3]])
    out = m(x)
    assert out.shape == (3, 7)
    loss = _train.cross_entropy(out, (x[:, 0] + x[:, 1]) % 7)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_grad_stats_f64_matches_direct_float64_gradient():
    torch.manual_seed(0)
    model = _train.mlp(5, 7, 3)
    X, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    st = _train.grad_stats_f64(model, _train.cross_entropy, X, y, lr=0.1)
    m64 = __import__("copy").deepcopy(model).double()
    g = torch.autograd.grad(_train.cross_entropy(m64(X.double()), y), list(m64.parameters()))
    g2 = float(sum((t ** 2).sum() for t in g))
    assert st["grad_sq"] == pytest.approx(g2, rel=1e-10)
    d = sum(p.numel() for p in model.parameters())
    assert st["D"] == pytest.approx(0.1 * st["tr_sigma"] / (2 * 40 * d), rel=1e-12)
    assert st["C"] == pytest.approx(g2 / (st["D"] * d), rel=1e-10)
    assert st["C_sgd"] == pytest.approx(g2 * 40 / 0.1, rel=1e-10)
