import numpy as np
import pytest

from hhld.landscapes import double_well_1d, double_well_2d, get_landscape
from hhld.quantum import fp_map
from hhld.quantum.grid import make_grid


@pytest.mark.parametrize("case", ["dw1d", "dw2d"])
def test_fp_and_mapped_schrodinger_spectra_agree(case):
    if case == "dw1d":
        L, g, D = double_well_1d(), make_grid(400, [(-2.5, 2.5)]), 0.2
    else:
        L, g, D = double_well_2d(), make_grid(30, [(-2.2, 2.2)] * 2), 0.3
    c = fp_map.compare_spectra(g, L, D, k=6)
    assert c.max_abs_diff < 1e-5
    assert c.fp_max_imag < 1e-6
    assert abs(c.schrodinger[0]) < 1e-10  # the Gibbs state has rate 0
    assert np.all(np.diff(c.schrodinger) > 0)  # real, ordered, non-degenerate here
    # the continuum potential |grad L|^2/4D - lap L/2 gives the same low spectrum to O(dx^2)
    assert np.max(np.abs(c.continuum[1:4] - c.schrodinger[1:4])) < 0.1 * c.schrodinger[3]


def test_ground_state_is_sqrt_gibbs():
    L, g, D = double_well_1d(), make_grid(300, [(-2.5, 2.5)]), 0.15
    E, psi = fp_map.schrodinger_spectrum(g, L, D, k=2)
    s = np.sqrt(fp_map.gibbs_density(g, L, D))
    s /= g.norm(s)
    assert np.max(np.abs(psi[0] - s)) < 1e-8 * s.max()
    H = fp_map.mapped_hamiltonian(g, L, D)
    assert np.max(np.abs(H @ s.ravel())) < 1e-9 * np.max(np.abs(H.diagonal())) * s.max()


def test_generator_conserves_mass_and_fixes_gibbs():
    L, g, D = double_well_2d(), make_grid(30, [(-2, 2)] * 2), 0.25
    A = fp_map.fp_generator(g, L, D)
    assert np.max(np.abs(np.asarray(A.sum(axis=0)))) < 1e-10
    rho = fp_map.gibbs_density(g, L, D).ravel()
    assert np.max(np.abs(A @ rho)) < 1e-10 * np.max(np.abs(A.diagonal())) * rho.max()


def test_ou_spectrum_is_integer_multiples():
    # L = k x^2 / 2: FP rates {0, k, 2k, ...} independent of D (up to O(dx^2))
    k = 1.5
    L = get_landscape("quadratic", A=[k])
    g = make_grid(600, [(-6, 6)])
    for D in (0.3, 1.0):
        E, _ = fp_map.schrodinger_spectrum(g, L, D, k=4)
        assert np.allclose(E, k * np.arange(4), atol=2e-3)


def test_fp_evolution_equals_imaginary_time_schrodinger():
    L, g, D = double_well_1d(), make_grid(200, [(-2.5, 2.5)]), 0.2
    x = g.axes()[0]
    rho0 = np.exp(-((x - 1.0) ** 2) / 0.02)
    rho0 /= rho0.sum() * g.dV
    a = fp_map.evolve_fp(g, rho0, L, D, [0.3, 3.0])
    b = fp_map.evolve_fp_via_schrodinger(g, rho0, L, D, [0.3, 3.0])
    assert np.max(np.abs(a - b)) < 1e-9 * a.max()
    assert np.allclose(a.sum(axis=1) * g.dV, 1.0, atol=1e-12)


def test_truncating_box_warns_and_a_wide_box_gives_the_ou_spectrum():
    import warnings

    from hhld._validation import BoxTruncationWarning
    from hhld.landscapes import Quadratic

    # OU at D = 2 on [-3, 3]: 0, 1.19, 3.00, 5.78 instead of 0, 1, 2, 3 (no-flux walls cut the density)
    with pytest.warns(BoxTruncationWarning, match="truncated problem"):
        cmp_ = fp_map.compare_spectra(make_grid(128, [(-3, 3)]), Quadratic([1.0]), 2.0, k=4)
    assert cmp_.fp[1] > 1.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cmp_ = fp_map.compare_spectra(make_grid(256, [(-12, 12)]), Quadratic([1.0]), 2.0, k=4)
    np.testing.assert_allclose(cmp_.fp, [0, 1, 2, 3], atol=5e-3)


def test_continuum_spectrum_fourth_order_by_default():
    """The continuum-potential Hamiltonian uses the 5-point Laplacian: lambda_1 of the 1-D double well
    at D = 0.25 on 256 cells within 1e-3 of the converged value; the 3-point one is off by > 3%."""
    from hhld.fokker_planck import FokkerPlanck

    exact = FokkerPlanck(double_well_1d(), D=0.25, cells=6000, box=[(-2.5, 2.5)], check=False).spectrum(3).rates[1]
    g = make_grid(256, [(-2.5, 2.5)])
    fourth = fp_map.compare_spectra(g, double_well_1d(), 0.25, k=3).continuum[1]
    second = fp_map.compare_spectra(g, double_well_1d(), 0.25, k=3, continuum_order=2).continuum[1]
    assert abs(fourth / exact - 1) < 1e-3
    assert abs(second / exact - 1) > 0.03
    with pytest.raises(ValueError, match="continuum_order"):
        fp_map.compare_spectra(g, double_well_1d(), 0.25, k=3, continuum_order=3)
    with pytest.raises(ValueError, match="order must be 2"):
        fp_map.mapped_hamiltonian(g, double_well_1d(), 0.25, order=4)


def test_mobility_mu_scales_rates_and_sharpens_gibbs():
    """With mobility mu the OU rates are mu k n and the Gibbs density is exp(-mu L / D)."""
    from hhld.landscapes import Quadratic

    k, D, mu = 1.5, 0.6, 2.0
    g = make_grid(600, [(-6, 6)])
    E, _ = fp_map.schrodinger_spectrum(g, Quadratic([k]), D, k=4, mu=mu)
    np.testing.assert_allclose(E, mu * k * np.arange(4), atol=3e-3)
    w = fp_map.fp_spectrum(g, Quadratic([k]), D, k=4, mu=mu).real
    np.testing.assert_allclose(w, E, atol=1e-8)
    x = g.axes[0]
    rho = fp_map.gibbs_density(g, Quadratic([k]), D, mu)
    var = float((rho * x * x).sum() * g.dV)
    assert var == pytest.approx(D / (mu * k), rel=1e-3)
    assert abs(var - D / k) > 0.3 * D / k  # negative control: mu = 1 would give D / k


def test_map_is_the_fokker_planck_operator():
    """fp_map's generator is hhld.fokker_planck's operator (square-root-approximation fluxes) and its
    discrete Hamiltonian is that operator's symmetrised form, negated."""
    from hhld.fokker_planck import build_generator, build_symmetric

    L, g, D = double_well_2d(), make_grid(16, [(-2.2, 2.2)] * 2), 0.4
    U = L.value(g.points()).reshape(g.shape) / D
    assert (fp_map.fp_generator(g, L, D) != build_generator(g, U, D, scheme="sqra")).nnz == 0
    assert (fp_map.mapped_hamiltonian(g, L, D) + build_symmetric(g, U, D, scheme="sqra")).nnz == 0
    V = fp_map.mapped_potential_discrete(g, L, D).ravel()
    H = (-D * fp_map.neumann_laplacian(g)).toarray() + np.diag(V)
    np.testing.assert_allclose(H, fp_map.mapped_hamiltonian(g, L, D).toarray(), atol=1e-12 * np.abs(H).max())
