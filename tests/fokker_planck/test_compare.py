"""hhld.fokker_planck.compare: histograms of Langevin ensembles on the grid, and their L1 distance
to a grid density beside the L1 of pure sampling noise."""
import numpy as np
import pytest

from hhld.fokker_planck import FokkerPlanck, compare_ensemble, histogram_density
from hhld.grid import Grid
from hhld.landscapes import Quadratic


def test_histogram_density_counts_by_cell_and_reports_the_mass_outside():
    grid = Grid.from_box([(0.0, 1.0)], 4)
    x = np.array([0.1, 0.2, 0.3, 0.9, 1.5])          # 2, 1, 0, 1 per cell and one outside
    dens, outside = histogram_density(grid, x)
    np.testing.assert_allclose(dens, np.array([2, 1, 0, 1]) / (5 * 0.25), rtol=0, atol=1e-15)
    assert outside == pytest.approx(0.2, abs=1e-15)
    assert grid.integrate(dens) == pytest.approx(0.8, abs=1e-15)   # normalised by all samples
    g2 = Grid.from_box([(0.0, 1.0), (0.0, 2.0)], (2, 2))
    d2, out2 = histogram_density(g2, np.array([[0.25, 0.5], [0.75, 1.5], [0.75, 1.9], [2.0, 0.0]]))
    np.testing.assert_allclose(d2, np.array([[1, 0], [0, 2]]) / (4 * 0.5), atol=1e-15)
    assert out2 == pytest.approx(0.25, abs=1e-15)


def test_histogram_density_names_the_bad_samples():
    grid = Grid.from_box([(0.0, 1.0), (0.0, 1.0)], 4)
    with pytest.raises(ValueError, match=r"shape \(N, 2\), got \(5, 3\)"):
        histogram_density(grid, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        histogram_density(grid, np.array([[0.5, np.nan]]))


def test_noise_l1_is_the_expected_l1_of_samples_drawn_from_the_density():
    """Samples drawn from the grid density itself: the mean L1 over 300 ensembles is noise_l1
    within 3%; negative control: samples from a density 10% wider miss it by more."""
    grid = Grid.from_box([(-4.0, 4.0)], 40)
    x = grid.axes[0]
    rng = np.random.default_rng(11)
    n = 2000

    def gauss(s):
        r = np.exp(-x ** 2 / (2 * s * s))
        return r / grid.integrate(r)

    def mean_l1_over_noise(sampled_from, rho):
        p = sampled_from / sampled_from.sum()
        l1 = []
        for _ in range(300):
            samples = x[rng.choice(x.size, size=n, p=p)] + rng.uniform(-0.5, 0.5, n) * grid.h[0]
            c = compare_ensemble(grid, samples[:, None], rho)
            assert c.outside == 0.0 and c.n_samples == n
            l1.append(c.l1)
        return np.mean(l1) / c.noise_l1

    rho = gauss(1.0)
    assert abs(mean_l1_over_noise(rho, rho) - 1) < 0.03
    assert mean_l1_over_noise(gauss(1.1), rho) - 1 > 0.03


def test_compare_langevin_ensemble_with_density():
    # exact OU samples at time t vs the grid solution
    rng = np.random.default_rng(7)
    kappa, D, t, m0 = 1.0, 0.3, 0.5, 1.0
    fp = FokkerPlanck(Quadratic([kappa]), box=[(-3, 3)], cells=60, D=D)
    m = m0 * np.exp(-kappa * t)
    v = D / kappa * (1 - np.exp(-2 * kappa * t))
    x = rng.normal(m, np.sqrt(v), size=(20000, 1))
    rho_t = fp.evolve(fp.gaussian([m0], 0.02), [t])[0]
    cmp_ = fp.compare_ensemble(x, rho_t)
    assert cmp_.l1 < 2.5 * cmp_.noise_l1 + 5e-3
    # a wrong density is clearly distinguished
    assert fp.compare_ensemble(x, fp.gibbs()).l1 > 5 * cmp_.noise_l1
