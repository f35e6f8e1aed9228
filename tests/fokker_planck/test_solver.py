"""hhld.fokker_planck.solver (FokkerPlanck): acceptance tests against exact results (issue 3)."""
import numpy as np
import pytest

from hhld.fokker_planck import FokkerPlanck
from hhld.landscapes import Quadratic, double_well_2d


def _ou(kappa, D, cells=400, half_width=None):
    s = np.sqrt(D / kappa)
    hw = half_width or (7 * s + 1.0)
    return FokkerPlanck(Quadratic([kappa]), box=[(-hw, hw)], cells=cells, D=D)


def _ou_exact(x, m0, s0, kappa, D, t):
    m = m0 * np.exp(-kappa * t)
    v = s0 ** 2 * np.exp(-2 * kappa * t) + D / kappa * (1 - np.exp(-2 * kappa * t))
    return np.exp(-(x - m) ** 2 / (2 * v)) / np.sqrt(2 * np.pi * v)


@pytest.mark.parametrize("method", ["expm", "contour"])
def test_ou_density_at_time_t(method):
    kappa, D, m0, s0 = 1.5, 0.2, 0.8, 0.15
    fp = _ou(kappa, D)
    x = fp.grid.axes[0]
    # start from the exact Gaussian sampled at the cell centres
    rho0 = fp.gaussian([m0], s0)
    times = [0.2, 0.7, 1.5]
    out = fp.evolve(rho0, times, method=method)
    for t, r in zip(times, out):
        err = fp.l1(r, _ou_exact(x, m0, s0, kappa, D, t))
        assert err < 1e-3, (t, err)
        assert abs(fp.mass(r) - 1) < 1e-12


def test_double_well_stationary_and_mass_conservation():
    fp = FokkerPlanck(double_well_2d(), box=[(-2, 2), (-2, 2)], cells=256, D=0.05)
    # normalised Gibbs density, computed here independently of the package
    X, Y = np.meshgrid(*fp.grid.axes, indexing="ij")
    w = np.exp(-((X ** 2 - 1) ** 2 + Y ** 2) / 0.05)
    gibbs = w / (w.sum() * fp.grid.cell_volume)
    st = fp.stationary(method="solve")
    assert fp.l1(st, gibbs) < 1e-3
    assert fp.l1(fp.gibbs(), gibbs) < 1e-12
    # the exact discrete stationary state: A pi = 0 to round-off
    assert np.abs(fp.rhs(gibbs)).max() < 1e-10 * gibbs.max() * np.abs(fp.generator.diagonal()).max()
    # mass conservation and positivity during evolution from an off-centre Gaussian
    rho0 = fp.gaussian([0.5, 0.5], 0.2)
    out = fp.evolve(rho0, [0.01, 0.02, 0.05], method="expm")
    assert fp.l1(out[-1], rho0) > 0.05  # it did move
    for r in out:
        assert abs(fp.mass(r) - 1.0) < 1e-12
        assert r.min() > -1e-12 * r.max()


@pytest.mark.parametrize("D", [0.05, 0.2, 1.0])
def test_ou_spectrum_is_integer_multiples_of_kappa(D):
    kappa = 1.3
    fp = _ou(kappa, D)
    rates = fp.spectrum(5).rates
    assert abs(rates[0]) < 1e-8 * kappa
    np.testing.assert_allclose(rates[1:], kappa * np.arange(1, 5), rtol=2e-3)


def test_kl_decays_at_rate_two_kappa():
    kappa, D = 1.0, 0.25
    fp = _ou(kappa, D)
    rho0 = fp.gaussian([1.5], np.sqrt(D / kappa))  # off-centre, equilibrium width
    times = np.linspace(1.0, 4.0, 13)
    out = fp.evolve(rho0, times)
    kl = np.array([fp.kl(r) for r in out])
    assert np.all(np.diff(kl) < 0)
    slope = np.polyfit(times, np.log(kl), 1)[0]
    assert abs(-slope - 2 * kappa) < 0.02 * 2 * kappa, slope
    # the free energy identity F - F* = (D/mu) KL
    F_star = fp.free_energy(fp.gibbs())
    assert np.isclose(fp.free_energy(out[0]) - F_star, D * kl[0], rtol=1e-9)


def test_contour_evolution_conserves_mass_2d():
    fp = FokkerPlanck(double_well_2d(), cells=64, D=0.1)
    rho0 = fp.gaussian([0.5, 0.5], 0.2)
    times = [0.5, 1.0, 1.5, 5.0]
    a = fp.evolve(rho0, times, method="contour")
    b = fp.evolve(rho0, times[:2], method="expm")
    assert np.abs(a[:2] - b).max() < 1e-10 * b.max()
    for r in a:
        assert abs(fp.mass(r) - 1.0) < 1e-12
        assert r.min() > -1e-12 * r.max()
