"""The default stationary path (closed form), the refined sparse solve, and CRAM-16."""
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg  # noqa: F401  (sp.linalg)

from hhld.fokker_planck import FokkerPlanck, flux_residual
from hhld.fokker_planck.evolve import (_CRAM16_ALPHA0, _CRAM16_POLES, _CRAM16_RESIDUES,
                                       _factor_shifted, evolve_generator)
from hhld.fokker_planck.stationary import stationary_solve
from hhld.landscapes import Quadratic, double_well_2d


def _gibbs_here(fp, D):
    X, Y = np.meshgrid(*fp.grid.axes, indexing="ij")
    w = np.exp(-((X ** 2 - 1) ** 2 + Y ** 2) / D)
    return w / (w.sum() * fp.grid.cell_volume)


def test_default_stationary_is_closed_form_and_a_copy():
    fp = FokkerPlanck(double_well_2d(), box=[(-2, 2), (-2, 2)], cells=64, D=0.05)
    st = fp.stationary()
    assert fp.l1(st, _gibbs_here(fp, 0.05)) < 1e-14
    st[:] = 0.0  # the caller may overwrite it without corrupting the cache
    assert fp.l1(fp.stationary("auto"), fp.gibbs()) == 0.0
    with pytest.raises(ValueError, match="method"):
        fp.stationary("eigs")


def test_refined_sparse_solve_matches_closed_form_on_metastable_well():
    # lambda_1 ~ 4e-9: a plain LU solve gets the mass split between wells wrong by ~1e-6;
    # the flux-form refinement brings it to round-off
    fp = FokkerPlanck(double_well_2d(), box=[(-2, 2), (-2, 2)], cells=128, D=0.05)
    ref = _gibbs_here(fp, 0.05)
    plain = stationary_solve(fp.generator, fp.grid, U=fp.U, D=fp.D, refine=0)
    refined = fp.stationary("solve")
    assert fp.l1(refined, ref) < 1e-13
    assert fp.l1(refined, ref) < 1e-3 * fp.l1(plain, ref)


def test_flux_residual_equals_generator_product():
    fp = FokkerPlanck(double_well_2d(), cells=(12, 9), D=0.3, check=False)
    rho = np.random.default_rng(1).random(fp.grid.size)
    a = flux_residual(fp.grid, fp.U, fp.D, rho)
    b = fp.generator @ rho
    assert np.abs(a - b).max() <= 1e-12 * np.abs(b).max()
    assert np.abs(flux_residual(fp.grid, fp.U, fp.D, fp.gibbs())).max() < 1e-12 * fp.gibbs().max()


def test_cram16_scalar_error():
    x = -np.concatenate([np.logspace(-10, 7, 20001), np.linspace(0.0, 80.0, 20001)])
    r = _CRAM16_ALPHA0 + 2 * np.real((_CRAM16_RESIDUES / (x[:, None] - _CRAM16_POLES)).sum(1))
    assert np.abs(r - np.exp(x)).max() < 5e-14
    assert np.all(_CRAM16_POLES.imag > 0)


def test_cram_evolution_matches_expm_and_contour():
    fp = FokkerPlanck(double_well_2d(), cells=48, D=0.1)
    rho0 = fp.gaussian([0.5, 0.5], 0.2)
    a = fp.evolve(rho0, [0.02, 0.04], method="cram")
    b = fp.evolve(rho0, [0.02, 0.04], method="expm")
    assert np.abs(a - b).max() < 1e-11 * b.max()
    c = fp.evolve(rho0, [1.0, 3.0], method="cram")
    d = fp.evolve(rho0, [1.0, 3.0], method="contour", n_points=48)
    for x, y in zip(c, d):
        assert fp.l1(x, y) < 1e-11
        assert abs(fp.mass(x) - 1.0) < 1e-12
        assert x.min() > -1e-12 * x.max()
    ch = fp.evolve(rho0, [1.0, 3.0], method="chebyshev")
    for x, y in zip(ch, d):
        assert fp.l1(x, y) < 1e-11
        assert abs(fp.mass(x) - 1.0) < 1e-14  # rescaled to the (exactly conserved) input mass
    # auto: Chebyshev for moderate ||A|| t, CRAM when its degree would be too high
    assert np.array_equal(fp.evolve(rho0, [1.0, 3.0]), ch)
    ou = FokkerPlanck(Quadratic([1.0]), box=[(-4, 4)], cells=200, D=0.3)
    g0 = ou.gaussian([1.0], 0.3)
    far = ou.evolve(g0, [200.0])[0]         # ||A|| t ~ 1.5e5: Chebyshev degree > 2000
    assert np.array_equal(far, ou.evolve(g0, [200.0], method="cram")[0])
    assert ou.l1(far, ou.gibbs()) < 1e-9


def test_chebyshev_matches_dense_expm_on_random_detailed_balance_chain():
    from scipy.linalg import expm

    from hhld.fokker_planck import chebyshev_expmv
    rng = np.random.default_rng(3)
    n = 30
    pi = rng.random(n) + 0.01
    K = rng.random((n, n))
    mask = rng.random((n, n)) < 0.2
    K = (K + K.T) * (mask | mask.T)        # symmetric "conductances"
    R = K / pi[None, :] * 50.0             # rates j -> i: K_ij / pi_j, detailed balance wrt pi
    np.fill_diagonal(R, 0.0)
    A = R - np.diag(R.sum(axis=0))
    v = rng.random(n)
    for t in (0.01, 0.7, 20.0):
        exact = expm(t * A) @ v
        got = chebyshev_expmv(sp.csr_matrix(A), v, t)
        assert np.abs(got - exact).max() < 1e-12 * np.abs(v).sum()


def test_shifted_factorisation_falls_back_to_pivoting():
    # z I - At = [[e, 1], [1, e]]: without row exchanges the pivot e = 1e-17 wipes out the
    # solution (x = [0, 1] instead of ~[1, 1]); the residual check must catch it
    z, e = 1.0j, 1e-17  # z - e is exact, so z I - At has the diagonal e exactly
    At = sp.csc_matrix(np.array([[z - e, -1.0], [-1.0, z - e]], dtype=complex))
    eye = sp.identity(2, dtype=complex, format="csc")
    M = (z * eye - At).toarray()
    b = np.ones(2, dtype=complex)
    bad = sp.linalg.splu(sp.csc_matrix(M), diag_pivot_thresh=0.0, options=dict(SymmetricMode=True))
    assert not np.allclose(M @ bad.solve(b), b)
    lu = _factor_shifted(At, eye, z)
    for rhs in (b, np.array([1.0, 2.0], dtype=complex)):
        assert np.allclose(M @ lu.solve(rhs), rhs)


def test_evolve_generator_rejects_unknown_method():
    with pytest.raises(ValueError, match="cram"):
        evolve_generator(sp.identity(3), np.ones(3), [1.0], method="pade")
