import warnings

import numpy as np
import pytest

from hhld import NonFiniteError
from hhld.fokker_planck import BoxTruncationWarning, FokkerPlanck, GridResolutionWarning
from hhld.landscapes import NumpyLandscape, Quadratic, double_well_2d


@pytest.mark.parametrize("D", [0.0, -0.1])
def test_nonpositive_D_raises(D):
    with pytest.raises(ValueError, match="D"):
        FokkerPlanck(double_well_2d(), cells=16, D=D)


def test_grid_too_coarse_raises_naming_the_failing_criterion():
    with pytest.raises(ValueError, match=r"too coarse.*reaches 1\d\d \(>= 20"):
        FokkerPlanck(double_well_2d(), cells=8, D=0.005)


def test_a_grid_exactly_at_the_limits_is_refused():
    """4 cells on the 1-D double well at D = 0.05: |mu dL|/D = 20 between neighbours, exactly at the limit (and a
    cell holding 0.5 to rounding); until 2026-12-02 the strict comparisons let it through with a warning saying the
    stationary state "stays exact" (<|x|> 0.50 against 0.99; rates [0, 0.1, 1] against [0, 3.6e-9, 3.84])."""
    from hhld.landscapes import double_well_1d

    with pytest.raises(ValueError, match=r"reaches 20 \(>= 20.0\)"):
        FokkerPlanck(double_well_1d(), cells=4, D=0.05)


def test_grid_barely_resolving_warns():
    with pytest.warns(GridResolutionWarning, match=r"\|mu ΔL\|/D"):
        FokkerPlanck(double_well_2d(), cells=32, D=0.02)


def test_box_cutting_gibbs_mass_warns():
    with pytest.warns(BoxTruncationWarning, match="fraction"):
        FokkerPlanck(Quadratic([1.0]), box=[(-0.5, 0.5)], cells=50, D=1.0)


def test_well_posed_problem_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FokkerPlanck(Quadratic([1.0]), box=[(-4, 4)], cells=100, D=0.3)


def test_nonfinite_potential_raises():
    land = NumpyLandscape(lambda th: np.log(th[..., 0]), lambda th: 1.0 / th, dim=1,
                          vectorize="batched", box=[(-1, 1)])
    with np.errstate(all="ignore"), pytest.raises(NonFiniteError, match="non-finite"):
        FokkerPlanck(land, cells=20, D=0.1)


def test_bad_box_and_cells():
    with pytest.raises(ValueError, match="box"):
        FokkerPlanck(double_well_2d(), box=[(-2, 2)], cells=16, D=0.1)
    with pytest.raises(ValueError, match="lo < hi"):
        FokkerPlanck(double_well_2d(), box=[(2, -2), (-2, 2)], cells=16, D=0.1)
    with pytest.raises(ValueError, match="cells"):
        FokkerPlanck(double_well_2d(), cells=1, D=0.1)


def test_bad_initial_density_and_times():
    fp = FokkerPlanck(Quadratic([1.0]), box=[(-4, 4)], cells=50, D=0.3)
    with pytest.raises(ValueError, match=">= 0"):
        fp.evolve(-np.ones(50), [1.0])
    with pytest.raises(NonFiniteError):
        fp.evolve(np.full(50, np.nan), [1.0])
    with pytest.raises(ValueError, match="sorted"):
        fp.evolve(fp.gaussian([0.0], 0.5), [2.0, 1.0])


@pytest.mark.parametrize("D", [float("nan"), float("inf")])
def test_nonfinite_D_raises(D):
    with pytest.raises(ValueError, match="D"):
        FokkerPlanck(double_well_2d(), cells=16, D=D)


@pytest.mark.parametrize("mu", [0.0, -1.0])
def test_nonpositive_mu_raises(mu):
    with pytest.raises(ValueError, match="mu"):
        FokkerPlanck(double_well_2d(), cells=16, D=0.1, mu=mu)


def test_D_so_small_that_U_overflows_raises():
    with pytest.raises(ValueError, match="overflows"):
        FokkerPlanck(Quadratic([1.0]), box=[(-5, 5)], cells=10, D=1e-310)


def test_infinite_potential_raises_naming_the_place():
    land = NumpyLandscape(lambda th: np.where(th[..., 0] > 0.5, np.inf, th[..., 0] ** 2),
                          lambda th: 2 * th, dim=1, vectorize="batched", box=[(-1, 1)])
    with pytest.raises(NonFiniteError, match=r"non-finite.*theta=\[0\.55\]"):
        FokkerPlanck(land, cells=20, D=0.1)


def test_box_missing_the_minimum_raises_naming_the_box():
    # the minima (+-1, 0) lie outside: the Gibbs density piles up against the face th1 = 1.5
    with pytest.raises(ValueError, match=r"box .* cuts off the Gibbs density"):
        FokkerPlanck(double_well_2d(), box=[(1.5, 3.0), (-2, 2)], cells=50, D=0.05)


def test_non_integer_cells_is_a_clear_type_error():
    with pytest.raises(TypeError, match="cells.*integer"):
        FokkerPlanck(Quadratic([1.0]), box=[(-5, 5)], cells=2.5, D=1.0)
