"""Gibbs averages on the grid: E[f], Var[f], Cov[f, g]."""
import numpy as np
import pytest

from hhld.fokker_planck import FokkerPlanck
from hhld.landscapes import Quadratic, double_well_1d, double_well_2d


def test_stein_covariance_is_D_on_the_grid():
    for ls, D, box in ((double_well_1d(), 0.3, [(-2.5, 2.5)]), (double_well_2d(), 0.2, [(-2.2, 2.2), (-1.8, 1.8)])):
        fp = FokkerPlanck(ls, D=D, cells=200 if ls.dim == 1 else 96, box=box, check=False)
        cov = fp.covariance(lambda th: th, lambda th: ls.grad(th))
        np.testing.assert_allclose(cov, D, rtol=1e-3)


def test_quadratic_moments_and_expected_consolidation():
    kappa, D = 2.0, 0.5
    ls = Quadratic([kappa], box=[(-5.0, 5.0)])
    fp = FokkerPlanck(ls, D=D, cells=800, check=False)
    assert fp.expectation(lambda th: th[:, 0]) == pytest.approx(0.0, abs=1e-12)
    assert fp.variance(lambda th: th[:, 0]) == pytest.approx(D / kappa, rel=1e-4)
    # E[C] = E|grad L|^2/(D d) = E[lap L]/d = kappa  (exact stationary consolidation ratio, mu = 1)
    assert fp.expectation(lambda th: (ls.grad(th) ** 2).sum(1) / D) == pytest.approx(kappa, rel=1e-4)
    # values on the grid and a given density
    x = fp.grid.axes[0]
    rho = fp.gaussian([1.0], 0.2)
    assert fp.expectation(x, rho) == pytest.approx(1.0, rel=1e-6)
    assert fp.expectation(x) != pytest.approx(1.0, abs=0.5)  # negative control: the Gibbs mean is 0


def test_bad_input():
    fp = FokkerPlanck(double_well_1d(), D=0.5, cells=64, check=False)
    with pytest.raises(ValueError, match="one value .* per cell"):
        fp.expectation(np.zeros(5))
    with pytest.raises(ValueError, match="not finite"):
        fp.expectation(lambda th: np.where(th[:, 0] > 0, np.inf, 0.0))
    with pytest.raises(ValueError, match="density"):
        fp.expectation(lambda th: th[:, 0], rho=-np.ones(64))
    with pytest.raises(ValueError, match="same shape"):
        fp.covariance(lambda th: th, lambda th: np.hstack([th, th]))
