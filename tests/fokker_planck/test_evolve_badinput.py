"""Very long evolution times (issue 11, second audit): the rational propagators are accurate up to
``t ||A|| = 1e17``; beyond it the answer was wrong (L1 distance 1.98 from the Gibbs density at
t = 1e50, negative densities at 1e20) and is now refused, while times below it still reach the
stationary state."""
from __future__ import annotations

import numpy as np
import pytest

from hhld.fokker_planck import FokkerPlanck
from hhld.landscapes import double_well_1d


@pytest.fixture(scope="module")
def fp():
    return FokkerPlanck(double_well_1d(), cells=128, D=0.05)


@pytest.mark.parametrize("t", [1e10, 1e12])
def test_long_times_below_the_limit_reach_the_gibbs_density(fp, t):
    # the slowest mode (rate 3.6e-9) is gone by t = 1e10 (e^-36): what is left is the propagators' round-off,
    # host-dependent (L1 below 1e-6 on an AVX-512 Intel host, 1.8e-6 at t = 1e10 on an AVX2-only AMD host,
    # 6.7e-9 at 1e12), far below the a-priori bound eps t ||A||
    rho = fp.evolve(fp.gaussian([0.27], 0.2), [t])[0]
    assert fp.l1(rho) < 1e-5
    assert fp.mass(rho) == pytest.approx(1.0, abs=1e-12)
    assert rho.min() > -1e-12


@pytest.mark.parametrize("t", [1e20, 1e50, 1e300])
def test_times_beyond_the_limit_are_refused(fp, t):
    with pytest.raises(ValueError, match=r"cannot evolve over t = .* accurate up to t \|\|A\|\| = 1e\+17"):
        fp.evolve(fp.gaussian([0.27], 0.2), [t])


def test_expm_refuses_a_time_it_would_take_forever_on(fp):
    with pytest.raises(ValueError, match=r"method='expm' .* use method='auto' or 'cram'"):
        fp.evolve(fp.gibbs(), [1e9], method="expm")
    assert np.allclose(fp.evolve(fp.gibbs(), [1.0], method="expm")[0], fp.gibbs(), atol=1e-12)
