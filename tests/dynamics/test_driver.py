"""Simulation driver: stationary statistics (KS with a negative control, Stein), non-finite
handling, checkpoint/resume, tunneling policy, observers' bounded memory."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import hhld
from hhld.dynamics import (
    ConsolidationObserver,
    EntropyCoupling,
    LossObserver,
    MomentsObserver,
    Series,
    Simulation,
    TrajectoryObserver,
    TransitionObserver,
    TunnelingPolicy,
    kde_score,
)
from hhld.landscapes import NumpyLandscape, Quadratic, double_well_1d, double_well_2d


def _gibbs_cdf(D):
    f = lambda x: (x * x - 1) ** 2  # noqa: E731
    xs = np.linspace(-3, 3, 6001)
    w = np.exp(-f(xs) / D)
    c = integrate.cumulative_trapezoid(w, xs, initial=0.0)
    c /= c[-1]
    return lambda x: np.interp(x, xs, c)


@pytest.fixture(scope="module")
def double_well_ensemble():
    D, n = 0.25, 5000
    rng = np.random.default_rng(11)
    start = rng.choice([-1.0, 1.0], size=(n, 1))
    sim = Simulation(double_well_1d(), start, dt=0.01, D=D, integrator="leimkuhler_matthews", rng=rng)
    sim.run(1500)
    return D, sim.state.theta[:, 0], sim


def test_ks_against_exact_gibbs_and_negative_control(double_well_ensemble):
    D, x, _ = double_well_ensemble
    p_right = stats.kstest(x, _gibbs_cdf(D)).pvalue
    p_wrong = stats.kstest(x, _gibbs_cdf(1.4 * D)).pvalue  # deliberately wrong temperature
    assert p_right > 1e-3
    assert p_wrong < 1e-6


def test_stein_identity_on_stationary_ensemble(double_well_ensemble):
    D, x, sim = double_well_ensemble
    g = sim.landscape.grad(x[:, None])[:, 0]
    prod = (x - x.mean()) * (g - g.mean())
    cov, se = prod.mean(), prod.std(ddof=1) / math.sqrt(x.size)
    assert abs(cov - D) < 5 * se
    # negative control: twice the temperature is caught (5 SE is about 40% of D at N = 5000, so no finer)
    assert abs(cov - 2.0 * D) > 5 * se
    assert abs(hhld.theory.stein_covariance(D) - D) < 1e-15


def _nan_landscape(bad_particle_x=5.0):
    def grad(t):
        g = 2 * t
        g[t[:, 0] > bad_particle_x] = np.nan
        return g

    return NumpyLandscape(lambda t: (t ** 2).sum(1), grad, 1, vectorize="batched")


def test_nonfinite_raises_naming_step_and_particle():
    land = _nan_landscape()
    x0 = np.zeros((6, 1))
    sim = Simulation(land, x0, dt=0.01, D=0.0, rng=np.random.default_rng(0))
    sim.state = sim.state._replace(theta=np.where(np.arange(6)[:, None] == 3, 6.0, 0.0),
                                   grad=land.grad(np.where(np.arange(6)[:, None] == 3, 6.0, 0.0)))
    with pytest.raises(hhld.NonFiniteError, match=r"step 1 in particle 3") as err:
        sim.run(5)
    assert err.value.step == 1 and err.value.particle == 3


def test_nonfinite_drop_mode_continues():
    land = _nan_landscape()
    theta = np.where(np.arange(6)[:, None] == 2, 6.0, 0.0)
    sim = Simulation(land, np.zeros((6, 1)), dt=0.01, D=0.1, rng=np.random.default_rng(0), on_nonfinite="drop",
                     observers=[LossObserver()])
    sim.state = sim.state._replace(theta=theta, grad=land.grad(theta))
    sim.run(10)
    assert sim.state.theta.shape == (5, 1)
    assert sim.dropped[0][1] == 2
    assert list(sim.particle_ids) == [0, 1, 3, 4, 5]


def test_initial_nonfinite_rejected():
    with pytest.raises(hhld.NonFiniteError, match="initial state"):
        Simulation(double_well_2d(), np.array([[np.nan, 0.0]]), dt=0.01, D=0.1)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("integrator", ["euler_maruyama", "leimkuhler_matthews", "baoab"])
def test_checkpoint_resume_is_exact(tmp_path, backend, integrator):
    lw = double_well_2d()

    def make():
        if backend == "numpy":
            x0, rng = np.zeros((50, 2)), np.random.default_rng(7)
        else:
            x0, rng = torch.zeros(50, 2, dtype=torch.float32), hhld.torch_generator(7)
        return Simulation(lw, x0, dt=0.01, D=0.2, rng=rng, integrator=integrator,
                          observers=[LossObserver(every=3), TransitionObserver()])

    full = make().run(80)
    part = make().run(40)
    part.save(tmp_path / "ck.npz")
    resumed = make().load(tmp_path / "ck.npz").run(40)
    np.testing.assert_array_equal(np.asarray(full.state.theta), np.asarray(resumed.state.theta))
    np.testing.assert_array_equal(full.results()["loss"]["mean"], resumed.results()["loss"]["mean"])
    assert np.asarray(resumed.state.theta).dtype == np.asarray(full.state.theta).dtype


def test_tunneling_policy_guard_and_amplitude():
    """Documents' rule: kick when C < threshold and (0-based) step > 10, by 3 hbar."""
    q = Quadratic(np.array([1.0, 1.0]))
    policy = TunnelingPolicy(eta=0.1, D=0.05, threshold=0.5)
    sim = Simulation(q, np.zeros((4, 2)), dt=0.01, D=0.0, rng=np.random.default_rng(0), tunneling=policy)
    sim.run(11)
    assert sim.tunneling_events == []  # guard: loop indices 0..10
    before = sim.state.theta.copy()
    sim.run(1)
    assert len(sim.tunneling_events) == 4 and all(e[0] == 12 for e in sim.tunneling_events)
    jump = np.linalg.norm(sim.state.theta - before, axis=1)
    assert np.allclose(jump, 3 * math.sqrt(0.1 * 0.05), rtol=0.02)  # plus a tiny drift


def test_series_thinning_bounds_memory():
    s = Series(max_len=100)
    for i in range(10_000):
        s.append(i, float(i))
    steps, vals = s.as_arrays()
    assert len(steps) < 100 and steps[0] == 0 and np.all(np.diff(steps) == s.stride)


def test_observers_results_shapes():
    lw = double_well_2d()
    obs = [LossObserver(every=2), ConsolidationObserver(every=2, per_particle=True),
           TrajectoryObserver(every=5, max_particles=3), MomentsObserver(every=1, burn_in=10)]
    r = Simulation(lw, np.zeros((10, 2)), dt=0.01, D=0.1, rng=np.random.default_rng(1), observers=obs).run(20).results()
    assert r["loss"]["mean"].shape == (10,)
    assert r["consolidation"]["per_particle"].shape == (10, 10)
    assert r["trajectory"]["theta"].shape == (5, 3, 2)
    assert r["moments"]["n"] == 100


def test_transition_observer_rate_matches_kramers_order():
    D = 0.5
    rng = np.random.default_rng(2)
    obs = TransitionObserver(every=2)
    Simulation(double_well_1d(), -np.ones((2000, 1)), dt=0.01, D=D, rng=rng, observers=[obs]).run(2000)
    k, se = obs.rate()
    kr = hhld.theory.kramers_rate(double_well_1d(), np.array([-1.0]), D=D).rate
    assert 0.5 * kr < k < 1.5 * kr and se < 0.1 * k


def test_kde_score_of_gaussian_and_entropy_coupling():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 2))
    s = kde_score(x[:200], x)
    # score of N(0, I) is -x; the KDE smooths with bandwidth h: -x / (1 + h^2)
    slope = np.polyfit(x[:200, 0], s[:, 0], 1)[0]
    assert -1.0 < slope < -0.7
    assert np.all(EntropyCoupling(0.0)(x) == 0)
    f = EntropyCoupling(0.5, rng=1)(x)
    assert f.shape == x.shape and np.isfinite(f).all()


def test_entropy_coupling_needs_hamiltonian_form():
    with pytest.raises(ValueError, match="baoab"):
        Simulation(double_well_2d(), np.zeros((5, 2)), dt=0.01, D=0.1, lam=0.1)
    sim = Simulation(double_well_2d(), np.random.default_rng(0).normal(size=(300, 2)), dt=0.01, D=0.1, lam=0.1,
                     integrator="baoab", rng=np.random.default_rng(0))
    sim.run(5)
    assert sim.extra_force.last_entropy is not None


def _sim(x0=None, rng=7, **kw):
    params = dict(dt=0.01, D=0.2, integrator="euler_maruyama")
    params.update(kw)
    x0 = np.zeros((50, 2)) if x0 is None else x0
    return Simulation(double_well_2d(), x0, rng=np.random.default_rng(rng), observers=[LossObserver(every=3)],
                      **params)


@pytest.mark.parametrize("change, match", [
    (dict(dt=0.02), "dt: checkpoint 0.01, this simulation 0.02"),
    (dict(D=0.3), "D: checkpoint 0.2"),
    (dict(x0=np.zeros((40, 2))), "n_particles: checkpoint 50"),
    (dict(integrator="leimkuhler_matthews"), "integrator"),
])
def test_load_refuses_a_checkpoint_of_another_configuration(tmp_path, change, match):
    path = _sim().run(10).save(tmp_path / "ck.npz")
    other = _sim(**change)
    with pytest.raises(ValueError, match=match):
        other.load(path)
    # the explicit override continues the saved ensemble under this simulation's parameters
    if "x0" not in change:
        other.load(path, allow_config_change=True).run(5)
        assert other.state.step == 15


def test_load_refuses_a_numpy_checkpoint_in_a_torch_run_even_with_override(tmp_path):
    path = _sim().run(10).save(tmp_path / "ck.npz")
    t = Simulation(double_well_2d(), torch.zeros(50, 2, dtype=torch.float64), dt=0.01, D=0.2,
                   rng=hhld.torch_generator(7), observers=[LossObserver(every=3)])
    with pytest.raises(ValueError, match="backend: checkpoint 'numpy', this simulation 'torch'.*cannot differ"):
        t.load(path, allow_config_change=True)


def test_checkpoint_is_data_only_and_pickle_is_refused(tmp_path):
    import pickle
    import zipfile

    path = _sim().run(10).save(tmp_path / "ck.npz")
    with zipfile.ZipFile(path) as z:  # an npz archive: a JSON document and plain arrays
        assert "__json__.npy" in z.namelist()
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"state": 1}))
    with pytest.raises(ValueError, match="not an hhld checkpoint.*pickle"):
        _sim().load(evil)


def test_entropy_coupling_run_is_reproducible_from_the_seed():
    # N > n_ref = 2000: the KDE's reference subsample is drawn; it must come from the run's seed
    def run(seed):
        x0 = np.random.default_rng(1).normal(size=(2500, 1))
        return Simulation(double_well_1d(), x0, dt=0.01, D=0.1, lam=0.2, integrator="baoab",
                          rng=np.random.default_rng(seed)).run(3).state.theta

    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))


@pytest.mark.parametrize("obs, match", [
    (object(), r"observers\[0\] = <object.*not an observer"),
    (lambda s, c: None, "not an observer"),
])
def test_bad_observer_is_a_clear_error(obs, match):
    with pytest.raises(TypeError, match=match):
        Simulation(double_well_2d(), np.zeros((5, 2)), dt=0.01, D=0.1, observers=[obs])


def test_a_function_is_not_a_landscape():
    with pytest.raises(TypeError, match="NumpyLandscape"):
        Simulation(lambda th: (th ** 2).sum(-1), np.zeros((5, 2)), dt=0.01, D=0.1)


def test_divergence_is_reported_once_by_the_check_not_by_numpy_warnings():
    """dt far above 2 / curvature on the double well: the positions overflow. The NonFiniteError names the step and
    the particle; numpy's own 'overflow encountered' warnings (three, from the gradient and the update, before
    2026-12-02) said the same without either."""
    import warnings

    from hhld.landscapes import get_landscape

    sim = Simulation(get_landscape("double_well_2d"), np.full((50, 2), 0.5), dt=1.0, D=0.1,
                     rng=np.random.default_rng(0), kernels=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(hhld.NonFiniteError, match=r"non-finite value at step \d+ in particle \d+.*Reduce dt"):
            sim.run(200)


@pytest.mark.parametrize("dtype, D, dt, warns", [
    ("bfloat16", 0.0, 1e-4, True),    # drift 1e-4 against a spacing of 3.9e-3 at 0.5: rounds back to theta
    ("float16", 1e-6, 1e-6, True),    # noise 1.4e-6 and drift 1.5e-6 against 4.9e-4
    ("bfloat16", 0.05, 1e-4, False),  # noise 3.2e-3 = 0.8 of the spacing: it moves (and dithers the drift)
    ("float32", 0.0, 1e-4, False),
])
def test_a_step_below_the_positions_resolution_warns_and_it_is_so(dtype, D, dt, warns):
    """Half-precision positions (or a tiny dt) whose step rounds back to them: one warning at construction, and what
    it says is so (nothing moves); a representable step: no warning, and the ensemble moves."""
    import warnings

    import torch

    theta0 = torch.full((200, 2), 0.5, dtype=getattr(torch, dtype))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        sim = Simulation(hhld.landscapes.double_well_2d(), theta0, dt=dt, D=D, rng=torch.Generator().manual_seed(0))
    hits = [w for w in rec if "rounds back to theta" in str(w.message)]
    assert len(hits) == (1 if warns else 0)
    sim.run(20)
    moved = float((sim.state.theta.double() - theta0.double()).abs().max())
    assert (moved == 0.0) == warns
