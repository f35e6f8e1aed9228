"""The documents' forms against hand-computed values, and bad input."""
import math

import numpy as np
import pytest

from hhld import theory as T
from hhld.landscapes import double_well_1d, double_well_2d


def test_hbar_and_temperature():
    assert T.hbar(0.1, 0.05) == pytest.approx(math.sqrt(0.005))
    assert T.hbar(0.1, 0.0) == 0.0
    np.testing.assert_allclose(T.hbar(0.1, np.array([0.001, 1.0])), np.sqrt([1e-4, 0.1]))
    assert T.effective_temperature(0.05, 0.1) == pytest.approx(0.5)
    assert T.eta_opt(0.01, 400.0, 4) == pytest.approx(1.0)


def test_uncertainty_right_hand_sides():
    assert T.uncertainty_bound_principle(0.1, 0.4) == pytest.approx(0.1)
    assert T.uncertainty_bound_theorem1(0.1, 0.4) == pytest.approx(0.01)
    assert T.uncertainty_bound_takeaway(0.3) == pytest.approx(0.15)
    assert T.uncertainty_bound_hbar(0.2) == pytest.approx(0.1)
    assert T.uncertainty_bound_total(0.2, 16) == pytest.approx(0.4)
    # with the documents' own eta = 1/lr the first two are constants
    for lr in (1e-3, 0.1, 3.0):
        assert T.uncertainty_bound_principle(1 / lr, lr) == pytest.approx(0.5)
        assert T.uncertainty_bound_theorem1(1 / lr, lr) == pytest.approx(0.25)


def test_theorems():
    assert T.theorem2_bound(0.2, 0.1, 3.0) == pytest.approx(3.0)
    assert T.theorem3_rate(0.1, 0.5, 0.2) == pytest.approx(0.2 / 1.0)
    assert T.theorem3_rate(0.1, 0.5, 0.0) == 0.0
    assert T.theorem4_margin(1.0, 0.5, 2.0, 0.5) == pytest.approx(0.75)
    assert T.theorem4_criterion(1.0, 0.5, 2.0, 0.5) is True
    assert T.theorem4_criterion(0.2, 0.5, 2.0, 0.5) is False
    assert T.takeaway5_margin(1.0, 2.0, 0.5) == pytest.approx(0.5)
    assert T.takeaway5_criterion(0.4, 2.0, 0.5) is False
    np.testing.assert_array_equal(T.theorem4_criterion(np.array([0.1, 1.0]), 0.5, 2.0, 0.5), [False, True])


def test_tunneling_formulas():
    assert T.wkb_tunneling_probability(0.3, 0.1) == pytest.approx(math.exp(-3.0))
    assert T.wkb_tunneling_probability(0.0, 0.0) == 1.0
    assert T.wkb_tunneling_probability(1.0, 0.0) == 0.0
    assert T.tunneling_rate_dimension(4, 0.1, 0.2, omega=2.0) == pytest.approx(2.0 * math.exp(-1.0))


def test_straight_action_equals_reference_code():
    dw = double_well_2d()
    a, b, eta = np.array([0.3, -0.2]), np.array([1.5, 0.7]), 0.1
    # the reference code's tunneling_probability, written out
    dl = max(dw.value(b) - dw.value(a), 0)
    ref = np.sqrt(2 * eta * dl) * np.linalg.norm(b - a)
    assert T.barrier_action_straight(dw, a, b, eta) == pytest.approx(ref, rel=1e-14)
    # a plain callable works too, and equal minima give zero action (Example 4)
    assert T.barrier_action_straight(lambda th: dw.value(th), a, b, eta) == pytest.approx(ref, rel=1e-14)
    assert T.barrier_action_straight(dw, [-1, 0], [1, 0], eta) == 0.0


def test_path_action_double_well_by_quadrature():
    from scipy.integrate import quad

    eta = 0.1
    ref, _ = quad(lambda x: np.sqrt(2 * eta * max((x * x - 1) ** 2 - 0.0, 0.0)), -1, 1, epsabs=1e-13)
    assert ref == pytest.approx(np.sqrt(2 * eta) * 4 / 3, rel=1e-10)
    assert T.barrier_action_path(double_well_1d(), [-1.0], [1.0], eta) == pytest.approx(ref, rel=1e-8)
    # 2-D double well: the minimum-energy path is the theta_2 = 0 axis
    assert T.barrier_action_path(double_well_2d(), [-1.0, 0.0], [1.0, 0.0], eta) == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("call, name", [
    (lambda: T.hbar(-0.1, 0.1), "eta"),
    (lambda: T.hbar(0.1, -1.0), "D"),
    (lambda: T.hbar(0.1, np.array([0.1, -1.0])), "D"),
    (lambda: T.effective_temperature(0.1, 0.0), "eta"),
    (lambda: T.theorem2_bound(0.1, 0.1, -1.0), "kl"),
    (lambda: T.wkb_tunneling_probability(-1.0, 0.1), "action"),
    (lambda: T.uncertainty_bound_theorem1(0.1, float("nan")), "lr"),
    (lambda: T.barrier_action_straight(double_well_2d(), [0.0, 0.0, 0.0], [1.0, 0.0], 0.1), "theta_from"),
    (lambda: T.barrier_action_straight(double_well_2d(), [0.0, 0.0], [1.0, 0.0], -0.1), "eta"),
])
def test_bad_input_names_the_value(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()


from hypothesis import given, settings, strategies as st  # noqa: E402

pos = st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=50, deadline=None)
@given(eta=pos, D=pos, lr=pos)
def test_formula_identities(eta, D, lr):
    h = T.hbar(eta, D)
    assert h * h == pytest.approx(eta * D, rel=1e-12)
    assert T.uncertainty_bound_theorem1(eta, lr) == pytest.approx(T.uncertainty_bound_principle(eta, lr) ** 2, rel=1e-12)
    assert T.uncertainty_bound_hbar(h) == pytest.approx(T.uncertainty_bound_total(h, 1), rel=1e-12)
    assert 0.0 < T.wkb_tunneling_probability(T.barrier_action_straight(double_well_1d(), [0.0], [0.5], eta), h) <= 1.0
    assert T.theorem3_rate(D, eta, lr) <= 2 * D / eta * (1 + 1e-12)
