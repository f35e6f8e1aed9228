"""Exact 1-D mean first-passage times (the double integral) against independent quadrature."""
import math

import mpmath
import pytest
from scipy import integrate

from hhld import theory as T
from hhld.landscapes import Quadratic, double_well_1d, double_well_2d


def _ou_quadrature(kappa, D, x0, b):
    """OU (L = kappa x^2/2, mu = 1): the inner integral in closed form (erf), the outer by mpmath:
    tau = (sqrt(pi)/kappa) int_{s0}^{sb} e^{s^2} (1 + erf s) ds, s = x sqrt(kappa/2D)."""
    c = math.sqrt(kappa / (2 * D))
    with mpmath.workdps(30):
        val = mpmath.quad(lambda s: mpmath.exp(s * s) * (1 + mpmath.erf(s)), [x0 * c, b * c])
    return float(mpmath.sqrt(mpmath.pi) / kappa * val)


@pytest.mark.parametrize("kappa, D, x0, b", [(1.0, 0.5, 0.0, 1.0), (2.0, 0.3, -0.5, 0.8), (1.0, 1.0, -1.0, 2.0)])
def test_ou_against_quadrature(kappa, D, x0, b):
    got = T.mean_first_passage_time_1d(Quadratic([kappa]), x0, b, D)
    assert got == pytest.approx(_ou_quadrature(kappa, D, x0, b), rel=1e-8)
    # mirror image: the target on the left
    assert T.mean_first_passage_time_1d(Quadratic([kappa]), -x0, -b, D) == pytest.approx(got, rel=1e-10)


@pytest.mark.parametrize("D", [0.25, 0.5, 1.0])
def test_double_well_against_dblquad(D):
    U = lambda x: (x * x - 1) ** 2 / D  # noqa: E731
    ref, _ = integrate.dblquad(lambda z, y: math.exp(U(y) - U(z)) / D, -1.0, 1.0, -6.0, lambda y: y,
                               epsabs=0, epsrel=1e-11)
    assert T.mean_first_passage_time_1d(double_well_1d(), -1.0, 1.0, D) == pytest.approx(ref, rel=1e-8)
    assert T.mean_first_passage_time_1d(lambda x: (x * x - 1) ** 2, -1.0, 1.0, D) == pytest.approx(ref, rel=1e-8)


def test_mobility_and_reflecting_wall():
    # mu scales the potential: tau(mu, D) = tau(1, D/mu) * (D/mu)/D ... check against direct quadrature
    mu, D = 2.0, 0.6
    U = lambda x: mu * (x * x - 1) ** 2 / D  # noqa: E731
    ref, _ = integrate.dblquad(lambda z, y: math.exp(U(y) - U(z)) / D, -1.0, 0.5, -1.5, lambda y: y,
                               epsabs=0, epsrel=1e-11)
    got = T.mean_first_passage_time_1d(double_well_1d(), -1.0, 0.5, D, mu=mu, reflect=-1.5)
    assert got == pytest.approx(ref, rel=1e-8)
    free = T.mean_first_passage_time_1d(double_well_1d(), -1.0, 0.5, D, mu=mu)
    assert free > got  # a wall at -1.5 shortens the passage (negative control: not equal)


def test_kramers_is_the_leading_order_of_the_exact_escape_time():
    lw = double_well_1d()
    exact = T.kramers_rate(lw, [-1.0], D=1.0).mean_escape_time_exact(lw)
    leading = T.kramers_rate(lw, [-1.0], D=1.0).mean_escape_time_leading_order
    assert leading == pytest.approx(2 * math.pi / math.sqrt(32) * math.e, rel=1e-9)
    assert exact == pytest.approx(T.mean_first_passage_time_1d(lw, -1.0, 1.0, 1.0), rel=1e-9)
    assert exact / leading == pytest.approx(1.18, abs=0.01)   # 3.57 vs 3.02 at D = 1
    ratios = [T.kramers_rate(lw, [-1.0], D=D).mean_escape_time_exact(lw) * T.kramers_rate(lw, [-1.0], D=D).rate
              for D in (0.5, 0.2, 0.1)]
    assert ratios[0] > ratios[1] > ratios[2] > 1.0 and ratios[2] < 1.12  # -> 1 as D -> 0
    r2 = T.kramers_rate(double_well_2d(), [-1.0, 0.0], D=0.3)
    with pytest.raises(ValueError, match="1-D landscapes"):
        r2.mean_escape_time_exact(double_well_2d())


def test_bad_input():
    lw = double_well_1d()
    assert T.mean_first_passage_time_1d(lw, 0.3, 0.3, 0.5) == 0.0
    with pytest.raises(ValueError, match="D must be > 0"):
        T.mean_first_passage_time_1d(lw, -1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="reflect=.*other side"):
        T.mean_first_passage_time_1d(lw, -1.0, 1.0, 0.5, reflect=2.0)
    with pytest.raises(ValueError, match="does not confine"):
        T.mean_first_passage_time_1d(lambda x: x, 0.0, 1.0, 0.5)  # L falls to the left
    with pytest.raises(ValueError, match="1-D landscape"):
        T.mean_first_passage_time_1d(Quadratic([1.0, 1.0]), 0.0, 1.0, 0.5)
    with pytest.raises(OverflowError, match="exceeds e\\^700"):
        T.mean_first_passage_time_1d(lw, -1.0, 1.0, 1e-3)
