"""The one-particle path (``hhld.dynamics.single``) against the ensemble driver with one particle."""
import numpy as np
import pytest

import hhld
from hhld.dynamics import ConsolidationObserver, LossObserver, Simulation, TrajectoryObserver, TunnelingPolicy
from hhld.dynamics.single import em_step_single, run_single, unit_kick_single
from hhld.landscapes import anisotropic_quadratic, double_well_2d


@pytest.mark.parametrize("landscape, D, n", [(double_well_2d(), 0.05, 800), (anisotropic_quadratic(6), 0.01, 400)])
def test_same_run_as_the_simulation_driver(landscape, D, n):
    eta, dt = 0.1, 0.01
    th0 = np.full(landscape.dim, 0.5)
    run = run_single(landscape.value, landscape.grad, th0, n, dt=dt, D=D, rng=np.random.default_rng(4),
                     threshold=0.5, min_step=10, amplitude=3.0 * np.sqrt(eta * D))
    obs = [TrajectoryObserver(max_particles=1, max_len=n + 2), LossObserver(max_len=n + 2),
           ConsolidationObserver(max_len=n + 2)]
    sim = Simulation(landscape, th0[None, :], dt=dt, D=D, rng=np.random.default_rng(4), observers=obs,
                     tunneling=TunnelingPolicy(eta=eta, D=D, threshold=0.5, min_step=10))
    sim.run(n)
    assert run.transitions == [s - 1 for s, _, _ in sim.tunneling_events]
    # the same random numbers and the same update; only the order of the additions differs
    np.testing.assert_allclose(run.trajectory, obs[0].result()["theta"][:, 0, :], rtol=0, atol=1e-12)
    np.testing.assert_allclose(run.losses, obs[1].result()["mean"], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(run.consolidations, obs[2].result()["mean"], rtol=1e-9)
    np.testing.assert_allclose(run.final_theta, sim.state.theta[0], atol=1e-12)
    if landscape.dim == 2:
        assert len(run.transitions) > 0


def test_negative_threshold_never_kicks_and_mobility_scales_the_drift():
    lw = double_well_2d()
    run = run_single(lw.value, lw.grad, np.zeros(2), 200, dt=0.01, D=0.05, rng=np.random.default_rng(0),
                     threshold=-1.0, amplitude=1.0)
    assert run.transitions == []
    a = em_step_single(np.random.default_rng(1), np.array([0.5, 0.5]), np.array([1.0, 2.0]), dt=0.1, D=0.0, mu=2.0)
    np.testing.assert_allclose(a, [0.3, 0.1])
    k = unit_kick_single(np.random.default_rng(1), np.zeros(3), 0.7)
    assert np.linalg.norm(k) == pytest.approx(0.7)


def test_D_zero_is_gradient_descent_with_infinite_C():
    lw = double_well_2d()
    run = run_single(lw.value, lw.grad, np.array([0.5, 0.5]), 50, dt=0.01, D=0.0, rng=np.random.default_rng(0))
    assert np.all(np.isinf(run.consolidations)) and run.transitions == []
    th = np.array([0.5, 0.5])
    for _ in range(50):
        th = th - 0.01 * lw.grad(th)
    np.testing.assert_allclose(run.final_theta, th, rtol=1e-14)


def test_errors_name_the_function_and_the_step():
    lw = double_well_2d()
    with pytest.raises(hhld.NonFiniteError, match="loss_fn 'f' returned inf at step 3"):
        calls = {"n": 0}

        def f(th):
            calls["n"] += 1
            return np.inf if calls["n"] > 3 else lw.value(th)

        run_single(f, lw.grad, np.zeros(2), 10, dt=0.01, D=0.05, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="theta0 must be a real vector"):
        run_single(lw.value, lw.grad, np.zeros((1, 2)), 10, dt=0.01, D=0.05, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        run_single(lw.value, lw.grad, np.zeros(2), 0, dt=0.01, D=0.05, rng=np.random.default_rng(0))
