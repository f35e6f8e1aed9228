"""hhld.torch.persample.sketch: the random-projection estimate of a convolution's per-sample squared
gradient norm (weight and bias together) is unbiased; its probes come from its own generator."""
import math

import pytest
import torch
import torch.nn.functional as F

from hhld.torch.persample.rules import conv_sketch_contribs
from hhld.torch.persample.sketch import ConvSketch

STRIDE, PAD, DIL = (1, 1), (1, 1), (1, 1)


def _problem():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    x = torch.randn(4, 2, 6, 6, generator=g, dtype=torch.float64)
    # output gradients with a non-zero mean: the bias part is a large share of the norm
    gy = torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64) + 0.5
    return w, b, x, gy


def _exact(w, b, x, gy, with_bias=True):
    """Per-sample squared norms by autograd, one sample at a time."""
    out = []
    for xi, gi in zip(x, gy):
        wi, bi = w.clone().requires_grad_(), b.clone().requires_grad_()
        dw, db = torch.autograd.grad((F.conv2d(xi[None], wi, bi, STRIDE, PAD, DIL) * gi[None]).sum(), (wi, bi))
        out.append((dw ** 2).sum() + ((db ** 2).sum() if with_bias else 0.0))
    return torch.stack(out)


def _draws(x, gy, w, n, probes, has_bias):
    sk = ConvSketch(probes=probes, seed=3)
    out = []
    for _ in range(n):
        proj = sk.project(x, w.shape, STRIDE, PAD, DIL, has_bias)
        out.append(conv_sketch_contribs(proj, gy, has_bias)["weight"].s)
    return torch.stack(out)


def test_estimate_is_unbiased_and_a_missing_bias_coordinate_is_caught():
    w, b, x, gy = _problem()
    ref = _exact(w, b, x, gy)
    est = _draws(x, gy, w, 400, 2, True)
    mean, se = est.mean(0), est.std(0) / math.sqrt(est.shape[0])
    assert torch.all((mean - ref).abs() < 4 * se), (mean, ref, se)
    # the stated bound: relative standard deviation per sample <= sqrt(2 / k)
    assert torch.all(est.std(0) / ref < math.sqrt(2 / 2) * 1.15)
    # negative control: without the bias coordinate it estimates the weight part only and misses
    # the (weight, bias) norm by far more than 4 standard errors
    est_w = _draws(x, gy, w, 400, 2, False)
    mean_w, se_w = est_w.mean(0), est_w.std(0) / math.sqrt(est_w.shape[0])
    assert torch.all((mean_w - ref).abs() > 4 * se_w)
    assert torch.all((mean_w - _exact(w, b, x, gy, with_bias=False)).abs() < 4 * se_w)


def test_probes_from_its_own_generator_and_reproducible():
    w, b, x, gy = _problem()
    before = torch.random.get_rng_state()
    a = _draws(x, gy, w, 3, 1, True)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a, _draws(x, gy, w, 3, 1, True))           # same seed, same draws
    assert not torch.equal(a[0], a[1])                            # fresh probes at every pass
    with pytest.raises(ValueError, match="conv_probes must be >= 1, got 0"):
        ConvSketch(probes=0)
