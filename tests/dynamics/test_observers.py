"""Observers: what they record, bounded memory, and C = ||grad L||^2 / (D d) whatever the state type."""
import numpy as np
import pytest

from hhld.dynamics import (ConsolidationObserver, LossObserver, MomentsObserver, Series, Simulation,
                           TrajectoryObserver, TransitionObserver)
from hhld.landscapes import Quadratic, double_well_1d, double_well_2d


def test_series_thins_to_bounded_length_and_round_trips():
    s = Series(max_len=8)
    for i in range(100):
        s.append(i, float(i))
    steps, values = s.as_arrays()
    assert len(steps) < 8 and s.stride > 1 and np.all(np.diff(steps) > 0) and np.array_equal(steps, values)
    t = Series(max_len=8)
    t.load_state_dict(s.state_dict())
    assert np.array_equal(t.as_arrays()[0], steps)
    with pytest.raises(ValueError, match="max_len"):
        Series(max_len=1)


@pytest.mark.parametrize("integrator", ["euler_maruyama", "baoab"])
def test_consolidation_is_grad_L_over_D_d_for_every_state(integrator):
    """C uses grad L itself: with the entropy coupling (lam > 0) the underdamped state's total force differs
    from -grad L, and C must not see the coupling (negative control: C from the total force differs)."""
    D = 0.2
    lam = 0.5 if integrator == "baoab" else 0.0
    obs = ConsolidationObserver(every=1, per_particle=True)
    x0 = np.random.default_rng(0).normal(size=(400, 2))
    sim = Simulation(double_well_2d(), x0, dt=0.01, D=D, integrator=integrator, lam=lam,
                     rng=np.random.default_rng(1), observers=[obs]).run(3)
    st = sim.state
    g = double_well_2d().grad(st.theta)
    expected = (g ** 2).sum(1) / (D * 2)
    np.testing.assert_allclose(obs.result()["per_particle"][-1], expected, rtol=1e-12)
    if lam > 0:
        total = -st.grad + st.extra_force
        wrong = (total ** 2).sum(1) / (D * 2)
        assert np.max(np.abs(wrong / expected - 1)) > 0.01


def test_loss_trajectory_and_moments_observers():
    q = Quadratic(np.array([1.0, 4.0]))
    loss, traj, mom = LossObserver(every=2), TrajectoryObserver(every=5, max_particles=3), MomentsObserver(burn_in=50)
    D, n = 0.3, 4000
    sim = Simulation(q, np.zeros((n, 2)), dt=0.05, D=D, integrator="leimkuhler_matthews",
                     rng=np.random.default_rng(2), observers=[loss, traj, mom]).run(400)
    res = sim.results()
    assert res["loss"]["steps"].tolist() == list(range(2, 401, 2))
    assert res["trajectory"]["theta"].shape == (1 + 400 // 5, 3, 2)  # the start, then every 5 steps
    # stationary moments: Var theta_i = D / lambda_i, Cov(theta_i, dL/dtheta_i) = D (Stein), mean loss = D d / 2
    m = res["moments"]
    np.testing.assert_allclose(np.diag(m["cov_theta"]), [D, D / 4], rtol=0.03)
    np.testing.assert_allclose(np.diag(m["cov_theta_grad"]), [D, D], rtol=0.03)
    assert res["loss"]["mean"][-50:].mean() == pytest.approx(D, rel=0.05)


def test_transition_observer_counts_crossings_with_hysteresis():
    obs = TransitionObserver(every=1, core=0.5)
    sim = Simulation(double_well_1d(), -np.ones((2000, 1)), dt=0.01, D=0.3, rng=np.random.default_rng(3),
                     observers=[obs]).run(2000)
    r = sim.results()["transitions"]
    k, se = obs.rate()
    assert r["transitions"] > 50 and k > 0 and se == pytest.approx(k / np.sqrt(r["transitions"]))
    assert np.all(np.diff(r["events"][:, 0]) >= 0) and set(np.unique(r["events"][:, 2])) <= {-1, 1}
    fp = r["first_passage"]
    assert np.nanmin(fp) > 0 and np.isnan(fp).any()  # some particles never left in t = 20


def test_an_observer_must_say_what_it_observes_and_returns():
    from hhld.dynamics.observers import Observer

    class Partial(Observer):
        def observe(self, state, ctx):
            pass

    with pytest.raises(TypeError, match="abstract"):
        Partial()

    class Whole(Partial):
        def result(self):
            return {}

    assert Whole(every=2).due(4) and not Whole(every=2).due(3)


def test_observers_that_cannot_give_a_number_say_so():
    """ConsolidationObserver with D = 0 is refused before the first step (was: a ValueError at the first step it
    was due, after the steps before it had run); TransitionObserver.rate with no transition (rate 0, no standard
    error) or no time in a well (NaN) warns (was: silent NaN)."""
    import numpy as np
    import pytest

    from hhld.dynamics import ConsolidationObserver, Simulation, TransitionObserver
    from hhld.landscapes import Quadratic, double_well_1d

    sim = Simulation(Quadratic([2.0]), np.ones((3, 1)), dt=0.1, D=0.0, rng=np.random.default_rng(0),
                     observers=[ConsolidationObserver(every=50)])
    with pytest.raises(ValueError, match=r"ConsolidationObserver needs D > 0.*got D=0.0"):
        sim.run(100)
    assert sim.state.step == 0
    obs = TransitionObserver()
    Simulation(double_well_1d(), -np.ones((10, 1)), dt=0.01, D=0.01, rng=np.random.default_rng(0),
               observers=[obs]).run(100)
    with pytest.warns(RuntimeWarning, match=r"no transition in an occupancy time of 10.*95 % upper bound 0.3"):
        k, se = obs.rate()
    assert k == 0.0 and np.isnan(se)
    obs = TransitionObserver()
    Simulation(double_well_1d(), np.zeros((10, 1)), dt=0.01, D=1e-6, rng=np.random.default_rng(0),
               observers=[obs]).run(10)
    with pytest.warns(RuntimeWarning, match=r"no particle was in a well"):
        assert all(np.isnan(obs.rate()))
