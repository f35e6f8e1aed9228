"""Per-sample norms from factors: the Gram and the formed paths agree, tied uses combine, scales are safe."""
import pytest
import torch

from hhld.torch.persample.factors import Dense, Outer, SqNorm, _materialise, per_sample_sq_norms


def formed(parts, q, p):
    """Per-sample gradients summed from (kind, a, b) parts, then squared norms (the reference)."""
    g = 0
    for kind, a, b in parts:
        if kind == "outer":
            g = g + torch.einsum("btq,btp->bqp", a, b)
        elif kind == "index":
            oh = torch.nn.functional.one_hot(a, q).to(b.dtype)
            g = g + torch.einsum("btq,btp->bqp", oh, b)
        else:
            g = g + a.reshape(a.shape[0], q, p)
    return (g ** 2).sum((1, 2))


@pytest.mark.parametrize("T,p,q", [(1, 6, 5), (5, 2, 40), (2, 30, 40), (9, 7, 3)])
def test_one_outer_gram_and_formed_agree(T, p, q):
    g = torch.Generator().manual_seed(T)
    u, v = torch.randn(4, T, q, generator=g, dtype=torch.float64), torch.randn(4, T, p, generator=g, dtype=torch.float64)
    ref = formed([("outer", u, v)], q, p)
    assert torch.allclose(per_sample_sq_norms([Outer(u, v, q)], (q, p)), ref)
    assert torch.allclose(_materialise([Outer(u, v, q)], [], (q, p), 4, torch.float64), ref)


def test_tied_embedding_and_linear_weight_include_the_cross_terms():
    g = torch.Generator().manual_seed(0)
    V, E, T = 7, 5, 6
    ids = torch.randint(0, V, (3, T), generator=g)
    h = torch.randn(3, T, E, generator=g, dtype=torch.float64)       # embedding output gradient
    gl = torch.randn(3, T, V, generator=g, dtype=torch.float64)      # logits gradient
    a = torch.randn(3, T, E, generator=g, dtype=torch.float64)       # head input
    ref = formed([("index", ids, h), ("outer", gl, a)], V, E)
    got = per_sample_sq_norms([Outer(ids, h, V), Outer(gl, a, V)], (V, E))
    assert torch.allclose(got, ref)
    # negative control: without the cross terms (sum of separate norms) the result differs
    sep = per_sample_sq_norms([Outer(ids, h, V)], (V, E)) + per_sample_sq_norms([Outer(gl, a, V)], (V, E))
    assert not torch.allclose(sep, ref)


def test_row_blocks_and_dense_parts_combine():
    g = torch.Generator().manual_seed(1)
    u1, v1 = torch.randn(2, 4, 3, generator=g, dtype=torch.float64), torch.randn(2, 4, 5, generator=g, dtype=torch.float64)
    u2, v2 = torch.randn(2, 4, 6, generator=g, dtype=torch.float64), torch.randn(2, 4, 5, generator=g, dtype=torch.float64)
    d = torch.randn(2, 9, 5, generator=g, dtype=torch.float64)
    pad1 = torch.zeros(2, 4, 9, dtype=torch.float64)
    pad1[..., :3] = u1
    pad2 = torch.zeros(2, 4, 9, dtype=torch.float64)
    pad2[..., 3:] = u2
    ref = formed([("outer", pad1, v1), ("outer", pad2, v2), ("dense", d, None)], 9, 5)
    got = per_sample_sq_norms([Outer(u1, v1, 9, 0), Outer(u2, v2, 9, 3), Dense(d)], (9, 5))
    assert torch.allclose(got, ref)


@pytest.mark.parametrize("scale", [1e-30, 1e25])
def test_float32_factors_of_extreme_scale(scale):
    g = torch.Generator().manual_seed(2)
    u, v = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 6, generator=g)
    ref = formed([("outer", u.double(), v.double())], 4, 6) * scale ** 2
    got = per_sample_sq_norms([Outer(u * scale, v, 4)], (4, 6))
    assert torch.allclose(got, ref, rtol=1e-5)


def test_a_sketch_cannot_be_combined():
    with pytest.raises(ValueError, match="cannot be combined"):
        per_sample_sq_norms([SqNorm(torch.ones(2)), Dense(torch.ones(2, 3))], (3,))
