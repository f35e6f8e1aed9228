"""Numerical contracts of the integrators (hhld.dynamics.INTEGRATORS drives the common tests)."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, sparse

import hhld
from hhld.dynamics import (
    INTEGRATORS,
    Simulation,
    baoab,
    euler_maruyama,
    get_integrator,
    init_overdamped,
    init_underdamped,
    leimkuhler_matthews,
)
from hhld.landscapes import NumpyLandscape, Quadratic, double_well_2d

ALL = sorted(INTEGRATORS)


def _init(info, landscape, theta, rng):
    if info.kind == "overdamped":
        return info.init(landscape, theta, integrator=info.name)
    return info.init(landscape, theta, rng=rng, eta=1.0, D=0.1)


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
    new = info.step(rng, state, lw, dt=0.01, D=0.1)
    assert new.theta.dtype == theta.dtype
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
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_ou_mean_and_variance_within_5_standard_errors(backend):
    """dtheta = -mu kappa theta dt + sqrt(2D) dW from theta0: exact Gaussian moments."""
    kappa, D, mu, theta0, t_end, dt, n = 2.0, 0.3, 1.0, 1.5, 1.0, 2e-3, 40_000
    q = Quadratic(np.array([kappa]))
    if backend == "numpy":
        x0, rng = np.full((n, 1), theta0), np.random.default_rng(1)
    else:
        x0, rng = torch.full((n, 1), theta0, dtype=torch.float64), hhld.torch_generator(1)
    sim = Simulation(q, x0, dt=dt, D=D, mu=mu, rng=rng).run(int(round(t_end / dt)))
    x = np.asarray(sim.state.theta)[:, 0]
    mean_exact = hhld.theory.ou_mean(theta0, t_end, kappa, mu=mu)
    var_exact = hhld.theory.ou_variance(t_end, kappa, D, mu=mu)
    se_mean = math.sqrt(var_exact / n)
    se_var = var_exact * math.sqrt(2.0 / (n - 1))
    assert abs(x.mean() - mean_exact) < 5 * se_mean
    assert abs(x.var(ddof=1) - var_exact) < 5 * se_var


# ---------------------------------------------------------------- strong order (EM)
class ScriptedNoise:
    """Stands in for a numpy Generator: returns pre-drawn normals in order."""

    def __init__(self, values):
        self.values = list(values)

    def standard_normal(self, shape, dtype=None):
        return self.values.pop(0).reshape(shape).astype(dtype or np.float64)


def test_euler_maruyama_strong_order():
    """Same Brownian paths at several dt; error at T against a fine reference. Declared 1.0."""
    info = get_integrator("euler_maruyama")
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
        state = init_overdamped(lw, x0)
        noise = ScriptedNoise(incr)
        for _ in range(m):
            state = euler_maruyama(noise, state, lw, dt=dt, D=D)
        return state.theta

    ref = solve(fine)
    ms = [16, 32, 64, 128]
    errs = [np.sqrt(((solve(m) - ref) ** 2).sum(1).mean()) for m in ms]
    order = np.polyfit(np.log(T / np.array(ms)), np.log(errs), 1)[0]
    assert abs(order - info.strong_order) <= 0.3, (order, errs)


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
        new = euler_maruyama(ScriptedNoise([XI]), st, land, dt=h, D=D_STAT)
        return _stationary_m2(new.theta[:, 0].reshape(GRID.size, xi.size), w) - _exact_m2()
    # LM from theta_n = y + s xi_n / 2 with carried noise xi_n, and xi_{n+1} = 0 picks y_{n+1}
    theta_n = X + 0.5 * s * XI[:, None]
    st = init_overdamped(land, theta_n)._replace(noise=XI[:, None].copy())
    new = leimkuhler_matthews(ScriptedNoise([np.zeros_like(XI)]), st, land, dt=h, D=D_STAT)
    y_next = new.theta[:, 0].reshape(GRID.size, xi.size)
    return _stationary_m2(y_next, w) + s * s / 4 - _exact_m2()


def test_euler_maruyama_stationary_order():
    hs = np.array([0.2, 0.1, 0.05])
    bias = np.array([_scheme_bias("euler_maruyama", h) for h in hs])
    order = np.polyfit(np.log(hs), np.log(np.abs(bias)), 1)[0]
    assert abs(order - INTEGRATORS["euler_maruyama"].stationary_order) <= 0.3, (order, bias)


def test_leimkuhler_matthews_stationary_order():
    """Declared 2. Fitted on h in {0.4, 0.2} (below, the grid's interpolation bias ~1e-4
    masks the O(h^2) term); LM's bias is also >100x smaller than EM's at h = 0.2."""
    hs = np.array([0.4, 0.2])
    bias = np.array([_scheme_bias("leimkuhler_matthews", h) for h in hs])
    order = np.polyfit(np.log(hs), np.log(np.abs(bias)), 1)[0]
    assert abs(order - INTEGRATORS["leimkuhler_matthews"].stationary_order) <= 0.3, (order, bias)
    assert abs(bias[1]) < abs(_scheme_bias("euler_maruyama", 0.2)) / 100


def test_baoab_weak_order_on_damped_oscillator():
    """The mean of the underdamped OU process (quadratic L) is the deterministic BAOAB
    map with zero noise; compare with the exact damped-oscillator solution. Declared 2."""
    kappa, eta, gamma, T = 4.0, 1.0, 1.0, 2.0
    q = Quadratic(np.array([kappa]))
    # exact: x'' + gamma x' + kappa/eta x = 0 with x(0)=1, p(0)=0
    A = np.array([[0.0, 1.0 / eta], [-kappa, -gamma]])
    from scipy.linalg import expm

    exact = expm(A * T) @ np.array([1.0, 0.0])
    errs, hs = [], np.array([0.1, 0.05, 0.025])
    for h in hs:
        st = init_underdamped(q, np.array([[1.0]]), np.array([[0.0]]), eta=eta)
        for _ in range(int(round(T / h))):
            st = baoab(ScriptedNoise([np.zeros(1)]), st, q, dt=h, D=0.5, eta=eta, friction=gamma)
        errs.append(abs(st.theta[0, 0] - exact[0]) + abs(st.momentum[0, 0] - exact[1]))
    order = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(order - INTEGRATORS["baoab"].weak_order) <= 0.3, (order, errs)


@pytest.mark.parametrize("name", ["leimkuhler_matthews", "baoab"])
def test_exact_stationary_variance_for_quadratics(name):
    """LM and BAOAB sample the Gibbs variance of a quadratic exactly at any stable dt."""
    kappa, D, n = 1.0, 0.5, 100_000
    q = Quadratic(np.array([kappa]))
    sim = Simulation(q, np.zeros((n, 1)), dt=0.5, D=D, integrator=name, rng=np.random.default_rng(5), friction=2.0)
    sim.run(120)
    v = float(np.var(sim.state.theta))
    exact = D / kappa
    assert abs(v - exact) < 5 * exact * math.sqrt(2 / n)


def _has_compiler():
    import shutil

    return any(shutil.which(c) for c in ("cc", "gcc", "clang"))


@pytest.mark.skipif(not _has_compiler(), reason="no C compiler")
def test_fused_kernel_refuses_a_planted_library_and_an_open_cache_dir(monkeypatch, tmp_path):
    import os

    from hhld.dynamics import integrators as I

    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    monkeypatch.setenv("HHLD_CACHE_DIR", str(cache))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert I._c_load() is not None
    (good,) = cache.glob("em_cubic_*.so")
    prefix = good.name.rsplit("_", 1)[0]
    good.unlink()
    # a file under the expected name whose content does not match the hash its name records
    planted = cache / f"{prefix}_0000000000000000.so"
    planted.write_bytes(b"\x7fELF not really")
    planted.chmod(0o700)
    assert I._c_load() is not None and str(cache) in I.C_KERNEL_STATUS
    assert not planted.exists() and len(list(cache.glob("em_cubic_*.so"))) == 1  # removed and rebuilt
    # a cache directory that others may write to is not used at all
    os.chmod(cache, 0o777)
    os.chmod(tmp_path, 0o755)
    assert I._c_load() is not None and str(tmp_path / "xdg") in I.C_KERNEL_STATUS  # the next place
    assert str(cache) not in I.C_KERNEL_STATUS

