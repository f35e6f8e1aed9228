"""hhld.torch.persample.rules: each op's per-sample contributions against brute force (float64).

Brute force: the gradient of ``sum(g_i * op(x_i; params))`` for each sample ``i`` alone, by
``torch.func.vmap(grad)``; the rules get the batch's ``x`` and output gradient ``g``."""
import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from hhld.torch.persample.factors import per_sample_sq_norms
from hhld.torch.persample.rules import (conv_contribs, embedding_contribs, linear_contribs, matmul_contribs,
                                        norm_contribs, sum_of_contribs)

torch.manual_seed(0)


def brute(op, params, x, g):
    """``{name: (B,)}`` squared norms and ``{name: sum over samples}`` of the per-sample gradients."""
    def one(p, xi, gi):
        return (op(xi.unsqueeze(0), p) * gi.unsqueeze(0)).sum()

    per = vmap(grad(one), in_dims=(None, 0, 0))(params, x, g)
    return {n: (v ** 2).flatten(1).sum(1) for n, v in per.items()}, {n: v.sum(0) for n, v in per.items()}


def check(contribs, params, sq, total):
    assert set(contribs) == set(params)
    for n, p in params.items():
        torch.testing.assert_close(per_sample_sq_norms([contribs[n]], p.shape), sq[n], rtol=1e-10, atol=0)
        torch.testing.assert_close(sum_of_contribs(contribs[n], p.shape), total[n], rtol=1e-10, atol=1e-12)


def test_linear_over_a_sequence():
    B, T = 5, 4
    p = {"weight": torch.randn(3, 6, dtype=torch.float64), "bias": torch.randn(3, dtype=torch.float64)}
    x, g = torch.randn(B, T, 6, dtype=torch.float64), torch.randn(B, T, 3, dtype=torch.float64)
    sq, tot = brute(lambda xi, q: F.linear(xi, q["weight"], q["bias"]), p, x, g)
    check(linear_contribs(x, g, 3, has_w=True, has_b=True), p, sq, tot)


def test_matmul_with_a_parameter_on_the_right():
    p = {"weight": torch.randn(6, 3, dtype=torch.float64)}
    x, g = torch.randn(4, 2, 6, dtype=torch.float64), torch.randn(4, 2, 3, dtype=torch.float64)
    sq, tot = brute(lambda xi, q: xi @ q["weight"], p, x, g)
    check(matmul_contribs(x, g, 6), p, sq, tot)


@pytest.mark.parametrize("groups, stride, padding", [(1, 1, 1), (2, 2, "valid"), (1, 1, "same")])
def test_conv2d(groups, stride, padding):
    p = {"weight": torch.randn(4, 4 // groups, 3, 3, dtype=torch.float64), "bias": torch.randn(4, dtype=torch.float64)}
    x = torch.randn(3, 4, 7, 6, dtype=torch.float64)
    out = F.conv2d(x, p["weight"], p["bias"], stride, padding, 1, groups)
    g = torch.randn_like(out)
    sq, tot = brute(lambda xi, q: F.conv2d(xi, q["weight"], q["bias"], stride, padding, 1, groups), p, x, g)
    check(conv_contribs(x, g, p["weight"].shape, stride, padding, 1, groups, has_w=True, has_b=True), p, sq, tot)


def test_embedding_with_padding_idx():
    p = {"weight": torch.randn(7, 3, dtype=torch.float64)}
    ids = torch.tensor([[1, 2, 1, 0], [6, 6, 0, 3], [0, 0, 0, 0]])
    g = torch.randn(3, 4, 3, dtype=torch.float64)
    sq, tot = brute(lambda i, q: F.embedding(i, q["weight"], padding_idx=0), p, ids, g)
    assert sq["weight"][2] == 0.0                              # only padding: no gradient
    check(embedding_contribs(ids, g, 7, padding_idx=0), p, sq, tot)


@pytest.mark.parametrize("kind", ["layer_norm", "group_norm"])
def test_norm_affine_parameters(kind):
    x = torch.randn(4, 6, 5, dtype=torch.float64)
    if kind == "layer_norm":
        p = {"weight": torch.randn(5, dtype=torch.float64), "bias": torch.randn(5, dtype=torch.float64)}
        op, args = (lambda xi, q: F.layer_norm(xi, (5,), q["weight"], q["bias"], 1e-5)), dict(normalized_shape=(5,),
                                                                                                eps=1e-5)
    else:
        p = {"weight": torch.randn(6, dtype=torch.float64), "bias": torch.randn(6, dtype=torch.float64)}
        op, args = (lambda xi, q: F.group_norm(xi, 3, q["weight"], q["bias"], 1e-5)), dict(num_groups=3, eps=1e-5)
    g = torch.randn_like(x)
    sq, tot = brute(op, p, x, g)
    check(norm_contribs(kind, x, g, args, True, True, p["weight"].shape), p, sq, tot)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_rms_norm_default_eps_is_that_of_the_compute_type(dtype):
    """``rms_norm(eps=None)`` uses the epsilon of its compute type (float32 for half inputs, not the half type's
    own, which is 6e4 times larger in bfloat16): on small activations the rule must match torch's op."""
    x = (0.02 * torch.randn(4, 3, 9, dtype=torch.float64)).to(dtype)
    w = torch.randn(9, dtype=torch.float64)
    out = F.rms_norm(x, (9,), w.to(dtype), None)
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    xhat = x.to(cdt) * torch.rsqrt(x.to(cdt).square().mean(-1, keepdim=True) + torch.finfo(cdt).eps)
    tol = 2 * torch.finfo(dtype).eps  # one rounding of the half type
    torch.testing.assert_close(out.to(cdt), (xhat * w.to(cdt)).to(dtype).to(cdt), rtol=tol, atol=tol)  # torch's
    g = torch.randn(4, 3, 9, dtype=torch.float64)
    got = norm_contribs("rms_norm", x, g.to(dtype), dict(normalized_shape=(9,), eps=None), True, False, (9,))
    want = (g.to(dtype).to(cdt) * xhat).sum(1)
    torch.testing.assert_close(got["weight"].g, want, rtol=1e-5, atol=1e-6)


def test_a_wrong_rule_is_caught():
    """Negative control: the linear rule given the input of another sample fails the same comparison."""
    p = {"weight": torch.randn(3, 6, dtype=torch.float64)}
    x, g = torch.randn(5, 4, 6, dtype=torch.float64), torch.randn(5, 4, 3, dtype=torch.float64)
    sq, _ = brute(lambda xi, q: F.linear(xi, q["weight"]), p, x, g)
    wrong = linear_contribs(x.roll(1, 0), g, 3)["weight"]
    assert not torch.allclose(per_sample_sq_norms([wrong], p["weight"].shape), sq["weight"], rtol=1e-3)
