"""Evolution of densities: the rational methods (CRAM-16, contour), Chebyshev and the auto choice."""
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg  # noqa: F401  (sp.linalg)

from hhld.fokker_planck import FokkerPlanck
from hhld.fokker_planck.evolve import (_CRAM16_ALPHA0, _CRAM16_POLES, _CRAM16_RESIDUES,
                                       _factor_shifted, evolve_generator)
from hhld.landscapes import Quadratic, double_well_1d, double_well_2d


@pytest.mark.parametrize("t", [1e8, 1e10, 1e12])
def test_mass_kept_to_round_off_at_very_long_times(t):
    # before: mass 1.00024 at t = 1e10 and 1.0465 at t = 1e12 (round-off of the rational method)
    fp = FokkerPlanck(double_well_1d(), cells=128, D=0.1)
    rho = fp.evolve(fp.gaussian([-1.0], 0.2), [t])[0]
    assert abs(fp.mass(rho) - 1.0) < 1e-12
    # t >> 1 / lambda_1 ~ 1e4: the density is the Gibbs density
    assert fp.l1(rho) < 1e-9


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


def test_auto_evolve_rejects_a_chebyshev_step_amplified_by_non_normality():
    """A narrow start far up a steep well at small D: the Chebyshev series alone returns large
    negative densities (non-normal generator); auto must agree with the rational methods."""
    import numpy as np

    from hhld.fokker_planck import FokkerPlanck
    from hhld.landscapes import Landscape

    class QuadQuartic(Landscape):          # θ²/2 + θ⁴/4
        def __init__(self):
            super().__init__(1, box=[(-3.0, 3.0)])

        def _value(self, th):
            return 0.5 * th[:, 0] ** 2 + 0.25 * th[:, 0] ** 4

        def _grad(self, th):
            return th[:, :1] + th[:, :1] ** 3

    fp = FokkerPlanck(QuadQuartic(), D=0.05, mu=10.0, cells=400, box=[(-1.615, 1.615)], check=False)
    x = fp.grid.mesh()[0]
    rho0 = np.where(np.abs(x - 0.8) <= 0.75, fp.gaussian([0.8], 0.15), 0.0)
    rho0 = rho0 / fp.grid.integrate(rho0)
    times = [0.015, 0.03]
    # the Chebyshev series alone gives -85 on a density of mass 1: asked for by name, it is refused with the reason
    # (until 2026-12-02 it was returned as it was)
    with pytest.raises(ValueError, match=r"t = 0.015: chebyshev gave a negative entry -85.*method='auto'"):
        fp.evolve(rho0, times, method="chebyshev")
    ref = fp.evolve(rho0, times, method="cram")
    auto = fp.evolve(rho0, times)
    assert ref.min() > -1e-10 and auto.min() > -1e-10
    for a, r in zip(auto, ref):
        assert fp.l1(a, r) < 1e-6   # this start is ill-conditioned for every method (expm vs cram: 3e-7)
    kls = [fp.kl(rho0)] + [fp.kl(np.clip(a, 0, None)) for a in auto]
    assert kls[0] > kls[1] > kls[2]     # relative entropy decreases along the exact flow


def test_a_step_beyond_round_off_is_refused_by_name_and_redone_by_auto():
    """A flat start on the 128-cell 2-D double well at D = 0.05 (the command line's `--width 100`): the Gibbs density
    spans ~80 decades, so the generator is far from normal. Chebyshev gave -0.30 (max 0.70) at t = 0.25 and CRAM
    -8.7e-11, both returned as they were (CRAM's then failed check_density: `hhld solve fokker-planck --width 100`
    ended in an error). Now each is refused by name with the reason, and auto moves on to the contour rule."""
    from hhld.fokker_planck import FokkerPlanck
    from hhld.landscapes import get_landscape

    fp = FokkerPlanck(get_landscape("double_well_2d"), cells=128, D=0.05, check=False)
    rho0 = fp.gaussian(center=[0.27, -0.46], width=100.0)
    for m, low in (("chebyshev", r"-0\.30"), ("cram", r"-8\.\d+e-11")):
        with pytest.raises(ValueError, match=rf"t = 0.25: {m} gave a negative entry {low}.*method='auto'"):
            fp.evolve(rho0, [0.25], method=m)
    auto = fp.evolve(rho0, [0.25])[0]
    expm = fp.evolve(rho0, [0.25], method="expm")[0]
    assert auto.min() > -1e-15 * auto.max()
    assert fp.l1(auto, expm) < 1e-7   # the contour rule's 32 points: 1.9e-8 here (48 points: 1e-12)
    assert np.isfinite(fp.kl(auto))
