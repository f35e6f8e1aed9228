"""The default stationary path (closed form), the refined sparse solve, the flux residual."""
import numpy as np
import pytest

from hhld.fokker_planck import FokkerPlanck, flux_residual
from hhld.fokker_planck.stationary import stationary_solve
from hhld.landscapes import double_well_2d


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
