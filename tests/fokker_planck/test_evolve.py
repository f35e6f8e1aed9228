import numpy as np
import pytest

from hhld.fokker_planck import FokkerPlanck
from hhld.landscapes import double_well_1d


@pytest.mark.parametrize("t", [1e8, 1e10, 1e12])
def test_mass_kept_to_round_off_at_very_long_times(t):
    # before: mass 1.00024 at t = 1e10 and 1.0465 at t = 1e12 (round-off of the rational method)
    fp = FokkerPlanck(double_well_1d(), cells=128, D=0.1)
    rho = fp.evolve(fp.gaussian([-1.0], 0.2), [t])[0]
    assert abs(fp.mass(rho) - 1.0) < 1e-12
    # t >> 1 / lambda_1 ~ 1e4: the density is the Gibbs density
    assert fp.l1(rho) < 1e-9
