import warnings

import numpy as np
import pytest

from hhld.fokker_planck import FokkerPlanck, SpectrumResolutionWarning
from hhld.landscapes import double_well_1d


def test_rate_below_eigensolver_resolution_warns_and_relaxation_rate_raises():
    # true lambda_1 ~ 1e-22 (Kramers), far below eps ||S|| ~ 1e-12: the solver returns round-off
    fp = FokkerPlanck(double_well_1d(), cells=700, D=0.02)
    with pytest.warns(SpectrumResolutionWarning, match=r"lambda_1 = .*Kramers.*mean first-passage"):
        spec = fp.spectrum(3)
    assert not spec.resolved(1) and spec.resolved(2)
    with pytest.raises(ValueError, match=r"relaxation rate lambda_1 = .* below .*Kramers"):
        spec.relaxation_rate
    with pytest.raises(ValueError, match="Kramers"):
        spec.symmetric_escape_rate()


def test_resolved_rate_is_silent_and_matches_kramers_order():
    fp = FokkerPlanck(double_well_1d(), cells=128, D=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = fp.spectrum(3)
    kramers = np.sqrt(32.0) / (2 * np.pi) * np.exp(-1 / 0.1)
    assert 0.7 < spec.symmetric_escape_rate() / kramers < 1.3


def test_sparse_spectrum_is_deterministic():
    fp = FokkerPlanck(double_well_1d(), cells=800, D=0.15)
    a, b = fp.spectrum(4), fp.spectrum(4)
    np.testing.assert_array_equal(a.rates, b.rates)
    np.testing.assert_array_equal(a.modes, b.modes)


def test_double_well_escape_rate_kramers():
    # 1-D double well (th^2-1)^2: Kramers k = sqrt(L''(min)|L''(sad)|)/(2 pi) exp(-1/D)
    D = 0.1
    fp = FokkerPlanck(double_well_1d(), box=[(-2.2, 2.2)], cells=600, D=D)
    spec = fp.spectrum(3)
    k = spec.symmetric_escape_rate()
    kramers = np.sqrt(8.0 * 4.0) / (2 * np.pi) * np.exp(-1.0 / D)
    assert 0.8 < k / kramers < 1.2
    x = fp.grid.axes[0]
    kab, kba = spec.escape_rates(x < 0)
    assert np.isclose(kab, kba, rtol=1e-6) and np.isclose(kab + kba, spec.relaxation_rate)
    # the first mode is antisymmetric (density moves between wells)
    assert np.sign(spec.modes[1][x < -0.5].sum()) != np.sign(spec.modes[1][x > 0.5].sum())
