"""hhld.torch.persample.functional: per-sample squared norms from the output gradients, against
torch.func per-sample gradients of the per-sample losses; refused when a recomputation differs."""
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from hhld.torch.persample.functional import functional_sq_norms
from hhld.torch.persample.rnn import RecomputeMismatch


def _mlp(p_drop=0.0):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Dropout(p_drop), nn.Linear(8, 3)).double()


def _batch(B=6):
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (B,), generator=g)


def _forward_backward(model, x, t):
    y = model(x)
    gy, = torch.autograd.grad(nn.functional.cross_entropy(y, t, reduction="sum"), y)
    return y, gy


def test_equals_per_sample_gradients_of_the_per_sample_losses():
    model, (x, t) = _mlp(), _batch()
    params = dict(model.named_parameters())
    y, gy = _forward_backward(model, x, t)
    got = functional_sq_norms(model, params, (x,), {}, [y], [gy], B=6, chunk_size=4)

    def loss_i(p, xi, ti):
        return nn.functional.cross_entropy(functional_call(model, p, (xi[None],)), ti[None], reduction="sum")

    per = vmap(grad(loss_i), in_dims=(None, 0, 0))({n: p.detach() for n, p in params.items()}, x, t)
    assert set(got) == set(params)
    for n, v in per.items():
        torch.testing.assert_close(got[n], (v ** 2).flatten(1).sum(1), rtol=1e-12, atol=0)
    # a subset of the parameters: only those, the others held fixed
    sub = functional_sq_norms(model, {"3.weight": params["3.weight"]}, (x,), {}, [y], [gy], B=6)
    assert list(sub) == ["3.weight"] and torch.equal(sub["3.weight"], got["3.weight"])


def test_a_recomputation_that_differs_is_refused():
    """Negative control: dropout in training mode redraws its mask per sample, so the per-sample
    outputs differ from the batch's and the result is refused, never returned."""
    model, (x, t) = _mlp(p_drop=0.5), _batch()
    model.train()
    y, gy = _forward_backward(model, x, t)
    with pytest.raises(RecomputeMismatch, match="differs from the batch's outputs"):
        functional_sq_norms(model, dict(model.named_parameters()), (x,), {}, [y], [gy], B=6)
    model.eval()                                   # the same model in eval mode is accepted
    y, gy = _forward_backward(model, x, t)
    functional_sq_norms(model, dict(model.named_parameters()), (x,), {}, [y], [gy], B=6)


def test_missing_batch_axis_or_gradient_is_named():
    model, (x, t) = _mlp(), _batch()
    y, gy = _forward_backward(model, x, t)
    params = dict(model.named_parameters())
    with pytest.raises(RecomputeMismatch, match="no output received a gradient"):
        functional_sq_norms(model, params, (x,), {}, [y], [None], B=6)
    with pytest.raises(RecomputeMismatch, match="no input has the batch axis"):
        functional_sq_norms(model, params, (x,), {}, [y], [gy], B=7)
