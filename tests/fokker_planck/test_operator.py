import numpy as np
import pytest

from hhld.fokker_planck import Grid, bernoulli, build_generator, build_symmetric, reference_rhs
from hhld.fokker_planck.stationary import gibbs_density


def _setup(dim, cells, seed=0):
    rng = np.random.default_rng(seed)
    g = Grid.from_box([(-2.0, 2.0)] * dim, cells)
    pts = g.points()
    L = ((pts[:, 0] ** 2 - 1) ** 2 + 0.7 * (pts[:, 1:] ** 2).sum(-1)).reshape(g.shape)
    D = 0.3
    U = L / D
    rho = rng.random(g.shape)
    return g, U, D, rho


@pytest.mark.parametrize("dim,cells", [(1, 17), (2, (9, 7)), (3, (5, 4, 6))])
def test_reference_rhs_equals_sparse(dim, cells):
    g, U, D, rho = _setup(dim, cells)
    A = build_generator(g, U, D)
    fast = (A @ rho.ravel()).reshape(g.shape)
    slow = reference_rhs(g, U, D, rho)
    assert np.max(np.abs(fast - slow)) <= 1e-12 * np.max(np.abs(slow))


@pytest.mark.parametrize("dim,cells", [(1, 40), (2, (20, 15)), (3, (8, 7, 6))])
def test_gibbs_is_exact_null_vector_and_mass_conserving(dim, cells):
    g, U, D, _ = _setup(dim, cells)
    A = build_generator(g, U, D)
    pi = gibbs_density(g, U).ravel()
    scale = np.abs(A.diagonal()).max() * pi.max()
    assert np.max(np.abs(A @ pi)) <= 1e-13 * scale
    # zero column sums -> d/dt sum(rho) = 0
    assert np.max(np.abs(np.asarray(A.sum(axis=0)))) <= 1e-12 * np.abs(A.diagonal()).max()
    # M-matrix: off-diagonal entries >= 0
    off = A - __import__("scipy.sparse", fromlist=["diags"]).diags(A.diagonal())
    assert off.data.min() >= 0


def test_symmetrised_operator_is_similar():
    g, U, D, _ = _setup(2, (8, 6))
    A = build_generator(g, U, D).toarray()
    S = build_symmetric(g, U, D).toarray()
    assert np.allclose(S, S.T, atol=0, rtol=0)
    p = np.exp(-(U - U.min())).ravel()
    S2 = np.diag(p ** -0.5) @ A @ np.diag(p ** 0.5)
    assert np.allclose(S, S2, rtol=1e-10, atol=1e-10 * np.abs(S).max())


def test_bernoulli_function():
    x = np.array([-800.0, -30.0, -1e-8, 0.0, 1e-8, 2.0, 800.0])
    b = bernoulli(x)
    assert np.all(np.isfinite(b))
    assert b[3] == 1.0
    assert np.isclose(b[0], 800.0)
    assert b[-1] == 0.0 or b[-1] < 1e-300
    assert np.isclose(b[5], 2.0 / np.expm1(2.0))
    assert np.allclose(bernoulli(-x) - bernoulli(x), x)  # B(-x) = B(x) + x


@pytest.mark.parametrize("scheme", ["sg", "sqra"])
def test_both_flux_schemes_fix_gibbs_and_symmetrise(scheme):
    """One operator, two face fluxes: each has exp(-U) as exact null vector, zero column sums, and
    its symmetrised form is the similarity transform of the generator."""
    g, U, D, _ = _setup(2, (10, 7))
    A = build_generator(g, U, D, scheme=scheme)
    pi = gibbs_density(g, U).ravel()
    assert np.max(np.abs(A @ pi)) <= 1e-13 * np.abs(A.diagonal()).max() * pi.max()
    assert np.max(np.abs(np.asarray(A.sum(axis=0)))) <= 1e-12 * np.abs(A.diagonal()).max()
    S = build_symmetric(g, U, D, scheme=scheme).toarray()
    p = np.exp(-(U - U.min())).ravel()
    np.testing.assert_allclose(S, np.diag(p ** -0.5) @ A.toarray() @ np.diag(p ** 0.5), rtol=1e-10,
                               atol=1e-10 * np.abs(S).max())


def test_sqra_symmetric_form_is_laplacian_plus_diagonal_and_schemes_differ():
    g, U, D, _ = _setup(1, 30)
    S = build_symmetric(g, U, D, scheme="sqra").toarray()
    off = S - np.diag(S.diagonal())
    h = g.h[0]
    np.testing.assert_allclose(off[off != 0], D / h ** 2, rtol=1e-14)  # the grid Laplacian's off-diagonal
    sg = build_generator(g, U, D).toarray()
    assert np.max(np.abs(sg - build_generator(g, U, D, scheme="sqra").toarray())) > 1e-3 * np.abs(sg).max()
    with pytest.raises(ValueError, match="scheme must be one of"):
        build_generator(g, U, D, scheme="upwind")
