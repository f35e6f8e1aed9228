"""Numerical contracts of the reference integrators. The integrator table (hhld.dynamics.INTEGRATORS)
drives the tests: every scheme that declares a strong, weak or stationary order is checked for it
(ORDER_CHECKS), and a scheme declaring an order with no check here fails test_every_declared_order_is_checked."""
import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import integrate, sparse

import hhld
from hhld.dynamics import (
    INTEGRATORS,
    Simulation,
    UnderdampedState,
    euler_maruyama,
    get_integrator,
    init_overdamped,
    init_underdamped,
    leimkuhler_matthews,
)
from hhld.landscapes import NumpyLandscape, Quadratic, double_well_2d

ALL = sorted(INTEGRATORS)


def _init(info, landscape, theta, rng):
    return info.init(landscape, theta, rng=rng, eta=1.0, D=0.1)


def _step(info, rng, state, landscape, **params):
    new, step_info = info.step(rng, state, landscape, **params)
    assert isinstance(new, info.state_type) and step_info.finite in (None, True)
    return new


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("backend", ["numpy32", "numpy64", "torch32", "torch64"])
def test_dtype_kept_and_input_not_modified(name, backend):
    info = INTEGRATORS[name]
    lw = double_well_2d()
    if backend.startswith("numpy"):
        theta = np.full((7, 2), 0.3, dtype=np.float32 if backend == "numpy32" else np.float64)
        rng = np.random.default_rng(0)
    else:
        theta = torch.full((7, 2), 0.3, dtype=torch.float32 if backend == "torch32" else torch.float64)
        rng = hhld.torch_generator(0)
    state = _init(info, lw, theta, rng)
    before = state.theta.copy() if backend.startswith("numpy") else state.theta.clone()
    new = _step(info, rng, state, lw, dt=0.01, D=0.1)
    assert new.theta.dtype == theta.dtype and new.grad.dtype == theta.dtype
    assert new.step == 1 and math.isclose(new.time, 0.01)
    assert (state.theta == before).all()  # pure: the input state is untouched
    assert not (new.theta == state.theta).all()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad,match", [(dict(dt=0.0), "dt must be > 0"), (dict(dt=-1.0), "dt must be > 0"),
                                       (dict(D=-0.1), "D must be >= 0"), (dict(mu=0.0), "mu must be > 0"),
                                       (dict(dt=float("nan")), "dt must be finite")])
def test_bad_parameters_named(name, bad, match):
    info = INTEGRATORS[name]
    lw = double_well_2d()
    rng = np.random.default_rng(0)
    state = _init(info, lw, np.zeros((3, 2)), rng)
    params = dict(dt=0.01, D=0.1, mu=1.0)
    params.update(bad)
    with pytest.raises(ValueError, match=match):
        info.step(rng, state, lw, **params)


def test_wrong_shape_and_unknown_integrator():
    lw = double_well_2d()
    with pytest.raises(ValueError, match=r"shape \(N, 2\).*got shape \(4, 3\)"):
        init_overdamped(lw, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="unknown integrator 'rk4'"):
        get_integrator("rk4")
    with pytest.raises(TypeError, match="torch.Generator"):
        euler_maruyama(np.random.default_rng(0), init_overdamped(lw, torch.zeros(2, 2)), lw, dt=0.1, D=0.1)


# ---------------------------------------------------------------- OU exact moments
def _ou_moments_z(backend, D_run):
    """(z_mean, z_var): the OU ensemble's mean and variance at T in standard errors from the exact
    moments of dtheta = -mu kappa theta dt + sqrt(2 D) dW (with D = 0.3; the run uses D_run)."""
    kappa, D, mu, theta0, t_end, dt, n = 2.0, 0.3, 1.0, 1.5, 1.0, 2e-3, 40_000
    q = Quadratic(np.array([kappa]))
    if backend == "numpy":
        x0, rng = np.full((n, 1), theta0), np.random.default_rng(1)
    else:
        x0, rng = torch.full((n, 1), theta0, dtype=torch.float64), hhld.torch_generator(1)
    sim = Simulation(q, x0, dt=dt, D=D_run, mu=mu, rng=rng).run(int(round(t_end / dt)))
    x = np.asarray(sim.state.theta)[:, 0]
    mean_exact = hhld.theory.ou_mean(theta0, t_end, kappa, mu=mu)
    var_exact = hhld.theory.ou_variance(t_end, kappa, D, mu=mu)
    se_mean = math.sqrt(var_exact / n)
    se_var = var_exact * math.sqrt(2.0 / (n - 1))
    return abs(x.mean() - mean_exact) / se_mean, abs(x.var(ddof=1) - var_exact) / se_var


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_ou_mean_and_variance_within_5_standard_errors(backend):
    z_mean, z_var = _ou_moments_z(backend, 0.3)
    assert z_mean < 5 and z_var < 5


def test_ou_variance_negative_control():
    """The same comparison fails for a run at a 10% larger D (the tolerance can fail)."""
    _, z_var = _ou_moments_z("numpy", 0.33)
    assert z_var > 5


# ---------------------------------------------------------------- order checks
class ScriptedNoise:
    """Stands in for a numpy Generator: returns pre-drawn normals in order (a zero array is
    reused for every draw once the list is down to one entry marked ``repeat``)."""

    def __init__(self, values, repeat_last=False):
        self.values = list(values)
        self.repeat_last = repeat_last

    def standard_normal(self, shape, dtype=None):
        v = self.values[0] if self.repeat_last and len(self.values) == 1 else self.values.pop(0)
        return np.asarray(v).reshape(shape).astype(dtype or np.float64)


def _fit_order(hs, errs):
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


def strong_order_overdamped(info):
    """Same Brownian paths at several dt (each step's normal = the summed fine increments);
    error at T against the finest solution, on the 2-D double well."""
    lw = double_well_2d()
    n, T, D = 400, 0.5, 0.2
    fine = 2 ** 10
    rng = np.random.default_rng(3)
    dW = rng.standard_normal((fine, n, 2)) * math.sqrt(T / fine)
    x0 = rng.normal(size=(n, 2)) * 0.5

    def solve(m):
        k = fine // m
        dt = T / m
        incr = dW.reshape(m, k, n, 2).sum(axis=1) / math.sqrt(dt)  # standard normals
        state = info.init(lw, x0)
        noise = ScriptedNoise(incr)
        for _ in range(m):
            state = _step(info, noise, state, lw, dt=dt, D=D)
        return state.theta

    ref = solve(fine)
    ms = np.array([16, 32, 64, 128])
    errs = [np.sqrt(((solve(m) - ref) ** 2).sum(1).mean()) for m in ms]
    return _fit_order(T / ms, errs), errs


def weak_order_linear(info):
    """The mean of a linear SDE is the scheme's deterministic map (zero noise): overdamped OU
    ``x0 exp(-mu kappa T)``, underdamped the damped oscillator ``expm(A T)``; error at T."""
    from scipy.linalg import expm

    kappa, T, x0 = 4.0, 2.0, 1.0
    q = Quadratic(np.array([kappa]))
    hs = np.array([0.1, 0.05, 0.025])
    errs = []
    for h in hs:
        zero = ScriptedNoise([np.zeros(1)], repeat_last=True)
        if info.state_type is UnderdampedState:
            eta, gamma = 1.0, 1.0
            st = info.init(q, np.array([[x0]]), np.array([[0.0]]), eta=eta)
            for _ in range(int(round(T / h))):
                st = _step(info, zero, st, q, dt=h, D=0.5, eta=eta, friction=gamma)
            exact = expm(np.array([[0.0, 1.0 / eta], [-kappa, -gamma]]) * T) @ np.array([x0, 0.0])
            errs.append(abs(st.theta[0, 0] - exact[0]) + abs(st.momentum[0, 0] - exact[1]))
        else:  # kappa = 1, T = 1: h well inside the asymptotic range
            q1 = Quadratic(np.array([1.0]))
            st = info.init(q1, np.array([[x0]]))
            for _ in range(int(round(1.0 / h))):
                st = _step(info, zero, st, q1, dt=h, D=0.5)
            errs.append(abs(st.theta[0, 0] - x0 * math.exp(-1.0)))
    return _fit_order(hs, errs), errs


# ------------------------------------------------ stationary (invariant-measure) order
D_STAT = 2.0


def _f(x):
    return 0.5 * x ** 2 + 2 * np.log(np.cosh(x))


def _g(x):
    return x + 2 * np.tanh(x)


def _exact_m2():
    Z = integrate.quad(lambda x: np.exp(-_f(x) / D_STAT), -12, 12)[0]
    return integrate.quad(lambda x: x * x * np.exp(-_f(x) / D_STAT), -12, 12)[0] / Z


GRID = np.linspace(-8, 8, 1201)


def _stationary_m2(targets, weights):
    """<x^2> under the invariant law of the Markov chain x -> targets[i, k] w.p. weights[k]
    (computed on a grid: no sampling noise)."""
    n, dx = GRID.size, GRID[1] - GRID[0]
    pos = (targets - GRID[0]) / dx
    i0 = np.clip(np.floor(pos).astype(int), 0, n - 2)
    fr = np.clip(pos - i0, 0, 1)
    rows = np.repeat(np.arange(n), targets.shape[1])
    W = np.broadcast_to(weights, targets.shape)
    P = sparse.csr_matrix((np.concatenate([(W * (1 - fr)).ravel(), (W * fr).ravel()]),
                           (np.concatenate([rows, rows]), np.concatenate([i0.ravel(), i0.ravel() + 1]))), shape=(n, n))
    pi = np.exp(-_f(GRID) / D_STAT)
    pi /= pi.sum()
    for _ in range(5000):
        new = P.T @ pi
        if np.abs(new - pi).sum() < 1e-14:
            break
        pi = new
    return float((pi * GRID ** 2).sum())


def _scheme_bias(name, h):
    """Exact stationary bias of <theta^2> of the scheme on L = x^2/2 + 2 log cosh x.

    EM: x' = x - h g(x) + s xi. LM: with y_n = theta_n - s xi_n / 2 the scheme is the Markov
    chain y' = y + s xi - h g(y + s xi / 2) and theta = y + s xi'/2 (independent), so
    <theta^2> = <y^2> + s^2/4. The chains' steps are the library's own step functions,
    driven by Gauss-Hermite nodes as scripted noise.
    """
    xi, w = np.polynomial.hermite_e.hermegauss(40)
    w = w / w.sum()
    s = math.sqrt(2 * D_STAT * h)
    land = NumpyLandscape(lambda t: _f(t[:, 0]), lambda t: _g(t), 1, vectorize="batched")
    X = np.repeat(GRID, xi.size)[:, None]
    XI = np.tile(xi, GRID.size)
    if name == "euler_maruyama":
        st = init_overdamped(land, X)
        new, _ = euler_maruyama(ScriptedNoise([XI]), st, land, dt=h, D=D_STAT)
        return _stationary_m2(new.theta[:, 0].reshape(GRID.size, xi.size), w) - _exact_m2()
    # LM from theta_n = y + s xi_n / 2 with carried noise xi_n, and xi_{n+1} = 0 picks y_{n+1}
    theta_n = X + 0.5 * s * XI[:, None]
    st = init_overdamped(land, theta_n)._replace(noise=XI[:, None].copy())
    new, _ = leimkuhler_matthews(ScriptedNoise([np.zeros_like(XI)]), st, land, dt=h, D=D_STAT)
    y_next = new.theta[:, 0].reshape(GRID.size, xi.size)
    return _stationary_m2(y_next, w) + s * s / 4 - _exact_m2()


def stationary_order_em(info):
    hs = np.array([0.2, 0.1, 0.05])
    bias = np.array([_scheme_bias("euler_maruyama", h) for h in hs])
    return _fit_order(hs, np.abs(bias)), bias


def stationary_order_lm(info):
    """Fitted on h in {0.4, 0.2} (below, the grid's interpolation bias ~1e-4 masks the O(h^2)
    term); LM's bias is also >100x smaller than EM's at h = 0.2."""
    hs = np.array([0.4, 0.2])
    bias = np.array([_scheme_bias("leimkuhler_matthews", h) for h in hs])
    assert abs(bias[1]) < abs(_scheme_bias("euler_maruyama", 0.2)) / 100
    return _fit_order(hs, np.abs(bias)), bias


def _baoab_stationary_bias(step, h, kappa=2.0, D=0.5, eta=1.0, gamma=1.0):
    """``(bias of Var theta, bias of Var pi)`` of the scheme's exact invariant law on the quadratic
    ``kappa theta^2 / 2``. BAOAB is linear there: ``z' = M z + b xi`` with ``z = (theta, pi)``; M and b
    are read off the library's step (zero noise on the unit states, unit noise on zero), and the
    invariant covariance solves ``S = M S M^T + b b^T``: no sampling noise."""
    from scipy.linalg import solve_discrete_lyapunov

    q = Quadratic(np.array([kappa]))
    z = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])          # e_theta, e_pi, 0
    st = init_underdamped(q, z[:, :1], z[:, 1:], eta=eta)
    params = dict(dt=h, D=D, eta=eta, friction=gamma)
    new0 = step(ScriptedNoise([np.zeros((3, 1))]), st, q, **params)[0]
    new1 = step(ScriptedNoise([np.ones((3, 1))]), st, q, **params)[0]
    M = np.stack([new0.theta[:2, 0], new0.momentum[:2, 0]])
    b = np.array([new1.theta[2, 0], new1.momentum[2, 0]])
    S = solve_discrete_lyapunov(M, np.outer(b, b))
    return S[0, 0] - D / kappa, S[1, 1] - eta * D


def stationary_order_baoab(info):
    """On a quadratic BAOAB's configurational law is exact at every stable dt (bias 0 to round-off),
    so the order is fitted on the kinetic part: ``Var pi = eta T (1 - dt^2 kappa / (4 eta))``
    exactly, an O(dt^2) bias (Leimkuhler & Matthews 2013). The configurational O(dt^2) on
    non-quadratic landscapes is the literature's value, not measured here."""
    hs = np.array([0.2, 0.1, 0.05])
    bias = np.array([_baoab_stationary_bias(info.step, h) for h in hs])
    assert np.abs(bias[:, 0]).max() < 1e-12
    np.testing.assert_allclose(bias[:, 1], -0.5 * hs ** 2 * 2.0 / 4, rtol=1e-9)
    return _fit_order(hs, np.abs(bias[:, 1])), bias


#: how each declared order is measured: (order kind, integrator) -> check(info) -> (order, errors)
ORDER_CHECKS = {
    ("strong", "euler_maruyama"): strong_order_overdamped,
    ("weak", "euler_maruyama"): weak_order_linear,
    ("weak", "leimkuhler_matthews"): weak_order_linear,
    ("weak", "baoab"): weak_order_linear,
    ("stationary", "euler_maruyama"): stationary_order_em,
    ("stationary", "leimkuhler_matthews"): stationary_order_lm,
    ("stationary", "baoab"): stationary_order_baoab,
}
#: declared orders without a check, and why (none today: add a reason here rather than a silent skip)
NOT_CHECKED: dict = {}


def _declared():
    out = []
    for name, info in sorted(INTEGRATORS.items()):
        for kind in ("strong", "weak", "stationary"):
            if getattr(info, f"{kind}_order") is not None:
                out.append((kind, name))
    return out


def test_every_declared_order_is_checked():
    missing = [k for k in _declared() if k not in ORDER_CHECKS and k not in NOT_CHECKED]
    assert not missing, f"orders declared in INTEGRATORS without a check in ORDER_CHECKS: {missing}"


@pytest.mark.parametrize("kind, name", [k for k in _declared() if k in ORDER_CHECKS])
def test_declared_order(kind, name):
    info = INTEGRATORS[name]
    order, errs = ORDER_CHECKS[(kind, name)](info)
    assert abs(order - getattr(info, f"{kind}_order")) <= 0.3, (order, errs)


def test_order_check_negative_control():
    """The strong-order check can fail: Euler-Maruyama whose noise is off by a factor
    (1 + sqrt(dt)) converges with strong order 0.5 only, outside the 0.3 tolerance of 1.0."""
    def mis_scaled(rng, state, landscape, *, dt, D, mu=1.0):
        return euler_maruyama(rng, state, landscape, dt=dt, D=D * (1 + math.sqrt(dt)) ** 2, mu=mu)

    order, _ = strong_order_overdamped(dataclasses.replace(INTEGRATORS["euler_maruyama"], step=mis_scaled))
    assert abs(order - 1.0) > 0.3


def test_stationary_order_check_negative_control():
    """The BAOAB stationary-order check can fail: an O step with Euler-Maruyama's noise variance
    ``2 friction dt eta T`` instead of ``(1 - c^2) eta T`` biases both variances at O(dt)."""
    def euler_o_step(rng, state, landscape, *, dt, D, mu=1.0, eta=1.0, friction=1.0, extra_force=None):
        c2 = math.exp(-2 * friction * dt)
        return INTEGRATORS["baoab"].step(rng, state, landscape, dt=dt, D=D * 2 * friction * dt / (1 - c2), mu=mu,
                                         eta=eta, friction=friction, extra_force=extra_force)

    hs = np.array([0.2, 0.1, 0.05])
    bias = np.array([_baoab_stationary_bias(euler_o_step, h) for h in hs])
    for k in (0, 1):
        order = _fit_order(hs, np.abs(bias[:, k]))
        assert abs(order - INTEGRATORS["baoab"].stationary_order) > 0.3, (k, order, bias)


def _stationary_variance_z(integrator, kappa=1.0, D=0.5, n=100_000):
    """The ensemble's variance after 120 steps at dt = 0.5, in standard errors from D/kappa."""
    q = Quadratic(np.array([kappa]))
    sim = Simulation(q, np.zeros((n, 1)), dt=0.5, D=D, integrator=integrator, rng=np.random.default_rng(5),
                     friction=2.0)
    sim.run(120)
    exact = D / kappa
    return abs(float(np.var(sim.state.theta)) - exact) / (exact * math.sqrt(2 / n))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["leimkuhler_matthews", "baoab"])
def test_exact_stationary_variance_for_quadratics(name):
    """LM and BAOAB sample the Gibbs variance of a quadratic exactly at any stable dt."""
    assert _stationary_variance_z(name) < 5


def test_exact_stationary_variance_negative_control():
    """The same comparison fails for Euler-Maruyama at the same dt: it misses by far more than
    5 standard errors (the tolerance of both schemes above can fail)."""
    assert _stationary_variance_z("euler_maruyama") > 5
