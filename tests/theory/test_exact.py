"""Exact results checked against independent computations (quadrature, Gaussian closed forms)."""
import numpy as np
import pytest

from hhld import theory as T
from hhld.landscapes import DoubleWell, Quadratic, double_well_1d

_trapz = getattr(np, "trapezoid", None) or np.trapz


def _gibbs_grid(L, D, mu, lo=-3.0, hi=3.0, n=200001):
    x = np.linspace(lo, hi, n)
    w = np.exp(-mu * (L(x) - L(x).min()) / D)
    return x, w / _trapz(w, x)


@pytest.mark.parametrize("D, mu", [(0.1, 1.0), (0.3, 0.5), (0.05, 2.0)])
def test_stein_identity_and_bound_by_quadrature(D, mu):
    L = lambda x: (x * x - 1) ** 2 + 0.3 * x
    dL = lambda x: 4 * x * (x * x - 1) + 0.3
    x, p = _gibbs_grid(L, D, mu)
    E = lambda f: _trapz(f * p, x)
    cov = E(x * dL(x)) - E(x) * E(dL(x))
    assert cov == pytest.approx(T.stein_covariance(D, mu), rel=1e-6)
    prod = np.sqrt(E(x * x) - E(x) ** 2) * np.sqrt(E(dL(x) ** 2) - E(dL(x)) ** 2)
    assert prod >= T.stein_uncertainty_lower_bound(D, mu) * (1 - 1e-9)
    # E|grad L|^2 = (D/mu) E[Lap L], so E[C] = E[Lap L]/(mu d)
    lap = E(12 * x * x - 4)
    assert E(dL(x) ** 2) == pytest.approx(T.expected_grad_norm_sq_stationary(lap, D, mu), rel=1e-6)
    assert E(dL(x) ** 2) / (D * 1) == pytest.approx(T.expected_consolidation_stationary(lap, 1, mu), rel=1e-6)


def test_stein_equality_for_decoupled_quadratic():
    lam, D, mu = np.array([0.5, 2.0, 7.0]), 0.2, 0.7
    var_th = D / (mu * lam)
    var_g = lam ** 2 * var_th
    np.testing.assert_allclose(np.sqrt(var_th * var_g), T.stein_uncertainty_lower_bound(D, mu), rtol=1e-14)


def test_free_energy_identity_gaussian():
    # L = k th^2/2, rho = N(m, s2), rho* = N(0, T/k), T = D/mu
    k, D, mu, m, s2 = 2.0, 0.3, 0.5, 0.4, 0.05
    Tt = D / mu
    v = Tt / k
    kl = 0.5 * (s2 / v + m * m / v - 1 + np.log(v / s2))
    F = lambda mean, var: 0.5 * k * (var + mean ** 2) - Tt * 0.5 * np.log(2 * np.pi * np.e * var)
    assert F(m, s2) - F(0.0, v) == pytest.approx(T.free_energy_identity(D, kl, mu), rel=1e-12)


def test_bakry_emery_rate_saturated_by_ou():
    # a shifted stationary-width Gaussian: KL(t) = m(t)^2/(2v) decays exactly at 2 mu kappa
    k, D, mu = 1.7, 0.2, 0.6
    v = D / (mu * k)
    kl = lambda t: T.ou_mean(1.0, t, k, mu) ** 2 / (2 * v)
    rate = -np.log(kl(2.0) / kl(1.0))
    assert rate == pytest.approx(T.bakry_emery_rate(k, mu), rel=1e-12)


def test_ou_moments():
    assert T.ou_mean(2.0, 0.5, 3.0, 0.5) == pytest.approx(2.0 * np.exp(-0.75))
    assert T.ou_variance(1.0, 2.0, 0.1, mu=0.5, var0=0.3) == pytest.approx(
        0.3 * np.exp(-2.0) + 0.1 / (0.5 * 2.0) * (1 - np.exp(-2.0)))
    assert T.ou_variance(2.0, 0.0, 0.1) == pytest.approx(0.4)  # free diffusion 2Dt
    assert T.ou_variance(1e9, 2.0, 0.1, mu=0.5) == pytest.approx(0.1)  # stationary D/(mu k)
    np.testing.assert_allclose(T.ou_variance(np.array([0.0, 1.0]), 1.0, 0.5), [0.0, 0.5 * (1 - np.exp(-2))])


def test_gibbs_log_partition():
    D, mu = 0.1, 2.0
    q = Quadratic([1.0, 4.0], box=[(-4, 4), (-4, 4)])
    exact = 0.5 * np.log(2 * np.pi * D / (mu * 1.0)) + 0.5 * np.log(2 * np.pi * D / (mu * 4.0))
    assert T.gibbs_log_partition(q, D, mu) == pytest.approx(exact, rel=1e-10)
    x, _ = np.linspace(-2, 2, 400001), None
    ref = np.log(_trapz(np.exp(-((x * x - 1) ** 2) / 0.2), x))
    assert T.gibbs_log_partition(double_well_1d(), 0.2) == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError, match="dim"):
        T.gibbs_log_partition(DoubleWell(dim=4), 0.1)
    with pytest.raises(ValueError, match="D"):
        T.gibbs_log_partition(double_well_1d(), 0.0)


@pytest.mark.parametrize("call, name", [
    (lambda: T.stein_covariance(-0.1), "D"),
    (lambda: T.stein_covariance(0.1, mu=0.0), "mu"),
    (lambda: T.free_energy_identity(0.1, -0.5), "kl"),
    (lambda: T.bakry_emery_rate(-1.0), "kappa"),
    (lambda: T.ou_variance(-1.0, 1.0, 0.1), "t"),
    (lambda: T.expected_consolidation_stationary(1.0, 0), "dim"),
])
def test_bad_input(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_theorem2_energy_gap_can_be_negative():
    # documents' Theorem 2 vs the exact identity: a state sharper than rho* at the minimum
    k, D, mu = 1.0, 0.2, 1.0
    v, s2 = D / (mu * k), 0.01
    kl = 0.5 * (s2 / v - 1 + np.log(v / s2))
    energy_gap = 0.5 * k * (s2 - v)
    assert energy_gap < 0 < T.theorem2_bound(D, 1.0, kl)
    entropy_gap = 0.5 * np.log(s2 / v)
    assert energy_gap - (D / mu) * entropy_gap == pytest.approx(T.free_energy_identity(D, kl, mu), rel=1e-12)


def test_gibbs_log_partition_refines_until_resolved_and_flags_what_it_cannot():
    """The quadrature's panels are checked against half as many: until 2026-12-02 they were fixed, and a narrow
    Gibbs density (small D) was silently missed (a 1-D double well at D = 1e-8: 13 units of log Z; a 2-D quadratic
    at D = 1e-6: Z 52 % off). Closed forms: a quadratic's Gaussian log Z; the double well's Laplace expansion."""
    import math
    import warnings

    import numpy as np
    import pytest

    from hhld._validation import QuadratureWarning
    from hhld.landscapes import DoubleWell, Quadratic
    from hhld.theory import gibbs_log_partition

    # 1-D double well (th^2 - 1)^2: two minima of curvature 8; at small D, log Z = log(2 sqrt(2 pi D / 8)) to O(D)
    for D in (1e-6, 1e-8):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = gibbs_log_partition(DoubleWell(1), D)
        assert got == pytest.approx(math.log(2 * math.sqrt(2 * math.pi * D / 8)), abs=1e-5)
    # 2-D quadratic, curvature 1 in both axes: log Z = log(2 pi D) exactly (box wide enough)
    q = Quadratic([1.0, 1.0])
    assert gibbs_log_partition(q, 1e-2) == pytest.approx(math.log(2 * math.pi * 1e-2), abs=1e-9)
    with pytest.warns(QuadratureWarning, match=r"may not be resolved.*give .* and .*more n_panels"):
        gibbs_log_partition(q, 1e-6)
    # what the box cannot resolve at any size the budget allows is flagged; a small box around the minimum is exact
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = gibbs_log_partition(q, 1e-6, box=np.array([[-0.02, 0.02], [-0.02, 0.02]]))
    assert got == pytest.approx(math.log(2 * math.pi * 1e-6), abs=1e-8)
