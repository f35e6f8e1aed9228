"""Minima, saddles, minimum-energy paths and Kramers' rate (numerical search, no hints used
for the saddles)."""
import numpy as np
import pytest

from hhld import theory as T
from hhld.landscapes import DoubleWell, MullerBrown, Quadratic, TiltedDoubleWell, double_well_1d, double_well_2d


@pytest.mark.parametrize("D", [0.05, 0.1, 0.25])
def test_kramers_1d_double_well_closed_form(D):
    r = T.kramers_rate(double_well_1d(), [-0.9], D=D)
    closed = np.sqrt(8 * 4) / (2 * np.pi) * np.exp(-1 / D)
    assert r.rate == pytest.approx(closed, rel=1e-6)
    assert r.barrier == pytest.approx(1.0, rel=1e-12)
    assert abs(r.saddle[0]) < 1e-8
    assert r.lambda_minus == pytest.approx(-4.0)
    assert T.arrhenius_exponent(r, D) == pytest.approx(1 / D)


def test_kramers_mobility_and_given_saddle():
    dw = double_well_1d()
    r1 = T.kramers_rate(dw, [-1.0], saddle=[0.05], D=0.1, mu=0.5)
    closed = 0.5 * np.sqrt(32) / (2 * np.pi) * np.exp(-0.5 / 0.1)
    assert r1.rate == pytest.approx(closed, rel=1e-6)
    assert r1.temperature == pytest.approx(0.2)


def test_kramers_2d_prefactor():
    # L = b(x^2-1)^2 + c y^2: det ratio sqrt((8b*2c)/(4b*2c)) = sqrt(2), |lambda-| = 4b
    lw = DoubleWell(dim=2, barrier=0.7, transverse=1.3)
    r = T.kramers_rate(lw, [1.0, 0.2], D=0.1)
    assert r.rate == pytest.approx(4 * 0.7 / (2 * np.pi) * np.sqrt(2) * np.exp(-0.7 / 0.1), rel=1e-6)


def test_double_well_2d_saddle_at_origin():
    dw = double_well_2d()
    s = T.find_saddle(dw, [-1.0, 0.3], [1.1, -0.2])
    np.testing.assert_allclose(s, [0.0, 0.0], atol=1e-8)
    sp = T.stationary_point(dw, s)
    assert sp.index == 1
    assert np.sum(sp.eigenvalues < 0) == 1


def test_muller_brown_saddles_and_minima():
    mb = MullerBrown()
    minima = T.find_minima(mb, n_starts=24, seed=1)
    known_min = np.array([[-0.558, 1.442], [0.623, 0.028], [-0.050, 0.467]])
    assert len(minima) == 3
    for k in known_min:
        assert min(np.linalg.norm(m - k) for m in minima) < 5e-3
    A, B, Cm = (min(minima, key=lambda m: np.linalg.norm(m - k)) for k in known_min)
    s1 = T.find_saddle(mb, A, Cm)
    s2 = T.find_saddle(mb, Cm, B)
    np.testing.assert_allclose(s1, [-0.822, 0.624], atol=5e-3)
    np.testing.assert_allclose(s2, [0.212, 0.293], atol=5e-3)
    for s in (s1, s2):
        sp = T.stationary_point(mb, s)
        assert sp.index == 1 and sp.grad_norm < 1e-6
    # A -> B passes through the intermediate minimum: the rate-limiting saddle is s1
    # (the higher one), the basin exit of A is s1 too
    s_ab = T.find_saddle(mb, A, B, n_images=61)
    np.testing.assert_allclose(s_ab, s1, atol=1e-6)


def test_minimum_energy_path_double_well():
    dw = double_well_2d()
    path = T.minimum_energy_path(dw, [-1.0, 0.0], [1.0, 0.0], 21)
    assert path.shape == (21, 2)
    np.testing.assert_allclose(path[:, 1], 0.0, atol=1e-9)
    np.testing.assert_allclose(path[:, 0], np.linspace(-1, 1, 21), atol=1e-9)


def test_tilted_well_exit_saddle_and_minimum():
    tw = TiltedDoubleWell(tilt=0.25)
    r = T.kramers_rate(tw, [1.0], D=0.1)
    np.testing.assert_allclose(r.saddle, tw.saddles()[0], atol=1e-10)
    np.testing.assert_allclose(r.minimum, tw.minima()[1], atol=1e-10)
    m = T.find_minimum(tw, [0.0])  # starts on no stationary point; descends somewhere
    assert T.stationary_point(tw, m).index == 0


def test_find_minimum_off_a_saddle():
    m = T.find_minimum(double_well_2d(), [0.0, 0.0])
    assert abs(abs(m[0]) - 1) < 1e-9 and abs(m[1]) < 1e-9


def test_bad_input():
    with pytest.raises(ValueError, match="D"):
        T.kramers_rate(double_well_1d(), [-1.0], D=-0.1)
    with pytest.raises(TypeError, match="D"):
        T.kramers_rate(double_well_1d(), [-1.0])
    with pytest.raises(ValueError, match="minimum"):
        T.kramers_rate(double_well_2d(), [-1.0], D=0.1)
    with pytest.raises(ValueError, match="no other minimum"):
        T.kramers_rate(Quadratic([1.0, 2.0]), [0.1, 0.0], D=0.1)
    with pytest.raises(ValueError, match="same basin"):
        T.find_saddle(double_well_1d(), [-1.0], [-0.8])
    with pytest.raises(ValueError, match="n_images"):
        T.minimum_energy_path(double_well_1d(), [-1.0], [1.0], 2)
    with pytest.raises(TypeError, match="landscape"):
        T.find_minimum(lambda x: x, [0.0])


def test_torch_and_numpy_landscapes_agree():
    import torch

    from hhld.landscapes import NumpyLandscape, TorchLandscape

    tl = TorchLandscape(lambda x: (x[:, 0] ** 2 - 1) ** 2 + 0.5 * (x[:, 1] - 0.3 * x[:, 0] ** 2) ** 2, dim=2)
    nl = NumpyLandscape(
        lambda th: (th[0] ** 2 - 1) ** 2 + 0.5 * (th[1] - 0.3 * th[0] ** 2) ** 2,
        lambda th: np.array([4 * th[0] * (th[0] ** 2 - 1) - 0.6 * th[0] * (th[1] - 0.3 * th[0] ** 2),
                             th[1] - 0.3 * th[0] ** 2]), dim=2)
    rt = T.kramers_rate(tl, [1.0, 0.3], D=0.1, target=[-1.0, 0.3])
    rn = T.kramers_rate(nl, [1.0, 0.3], D=0.1, target=[-1.0, 0.3])
    np.testing.assert_allclose(rt.saddle, 0.0, atol=1e-8)
    # L along the curved valley: barrier 1, |lambda-| = 4, det ratio (8*1)/(4*1)
    assert rt.rate == pytest.approx(4 / (2 * np.pi) * np.sqrt(2) * np.exp(-10), rel=1e-6)
    assert rn.rate == pytest.approx(rt.rate, rel=1e-6)
    assert isinstance(torch.__version__, str)


def test_string_with_relaxed_endpoints_high_dim():
    lw = DoubleWell(dim=6, barrier=0.5, transverse=2.0)
    a = np.r_[-0.8, 0.1 * np.ones(5)]
    b = np.r_[1.2, -0.1 * np.ones(5)]
    path = T.minimum_energy_path(lw, a, b, 15, relax_endpoints=True)
    np.testing.assert_allclose(path[0], np.r_[-1.0, np.zeros(5)], atol=1e-5)
    np.testing.assert_allclose(path[-1], np.r_[1.0, np.zeros(5)], atol=1e-5)
    np.testing.assert_allclose(path[:, 1:], 0.0, atol=1e-5)


def test_kramers_rate_outside_its_range_is_flagged():
    """Leading order as D/mu -> 0: at mu dL/D = 0.2 the 1-D double well's Eyring-Kramers rate is 47 % below the
    exact 1/MFPT, at 1 it is 18 % above; at D = 1e-4 exp(-1e4) underflows to 0. Until 2026-12-02 plain numbers;
    now a LeadingOrderWarning, and log_rate stays finite."""
    import math
    import warnings

    import pytest

    from hhld._validation import LeadingOrderWarning
    from hhld.landscapes import DoubleWell
    from hhld.theory import kramers_rate

    dw = DoubleWell(1)
    for D in (5.0, 1.0):
        with pytest.warns(LeadingOrderWarning, match=r"barrier is .* D/mu \(below 5\).*mean_escape_time_exact"):
            kramers_rate(dw, [-1.0], saddle=[0.0], D=D)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = kramers_rate(dw, [-1.0], saddle=[0.0], D=0.1)  # barrier 10 D: in range
        kramers_rate(dw, [-1.0], saddle=[0.0], D=5.0, warn=False)  # a sweep across the range, knowingly
    assert r.log_rate == pytest.approx(math.log(r.rate))
    with pytest.warns(LeadingOrderWarning, match=r"underflows.*log_rate"):
        r = kramers_rate(dw, [-1.0], saddle=[0.0], D=1e-4)
    assert r.rate == 0.0 and r.log_rate == pytest.approx(math.log(math.sqrt(32) / (2 * math.pi)) - 1e4)
