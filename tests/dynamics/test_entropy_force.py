"""The entropy coupling of the Hamiltonian form (hhld.dynamics.entropy_force)."""
import numpy as np
import pytest

from hhld.dynamics import EntropyCoupling, kde_score


def test_kde_score_of_a_gaussian_points_to_the_mean():
    x = np.random.default_rng(0).normal(size=(4000, 1))
    s = kde_score(x[:300], x)[:, 0]
    slope = np.polyfit(x[:300, 0], s, 1)[0]
    assert -1.0 < slope < -0.8  # the score of N(0, 1) is -x, smoothed by the bandwidth


def test_force_is_lam_S_score_zero_without_coupling_and_reproducible():
    x = np.random.default_rng(1).normal(size=(3000, 2)).astype(np.float32)
    assert np.all(EntropyCoupling(0.0)(x) == 0)
    a = EntropyCoupling(0.4, n_ref=1000, rng=np.random.default_rng(5))
    f = a(x)
    assert f.shape == x.shape and f.dtype == np.float32 and np.isfinite(f).all()
    b = EntropyCoupling(0.4, n_ref=1000, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(b(x), f)  # same generator: same subsample, same force
    # S > 0 for this ensemble (unit Gaussian in 2-D: S = 1 + log 2 pi ~ 2.84): the force points up the density
    assert a.last_entropy == pytest.approx(1 + np.log(2 * np.pi), rel=0.1)
    assert np.mean(np.sum(f * x, axis=1)) < 0
    with pytest.raises(ValueError, match="lam must be >= 0"):
        EntropyCoupling(-1.0)


def test_kde_score_of_samples_without_spread_is_a_clear_error():
    """Until 2026-12-02 ``kde_score(np.zeros((5, 2)))`` returned all NaN for finite input: Scott's bandwidth of
    samples with zero spread is 0 and the score 0/0. Now it says so; samples flat on one axis only, and an explicit
    bandwidth on one point, still give finite scores."""
    import warnings

    with pytest.raises(ValueError, match=r"all N=5 reference points are the same point \[0\.0, 0\.0\] \(zero spread\)"
                                         r".*add small noise.*explicit bandwidth > 0"):
        kde_score(np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"Scott's bandwidth needs at least 2 reference points, got N=1"):
        kde_score(np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"bandwidth must be > 0, got bandwidth=0\.0"):
        kde_score(np.random.default_rng(0).normal(size=(10, 2)), bandwidth=0.0)
    with pytest.raises(ValueError, match=r"points have d=2 coordinates, reference has d=3"):
        kde_score(np.ones((3, 2)), np.random.default_rng(0).normal(size=(10, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flat = kde_score(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]))
        one = kde_score(np.zeros((3, 2)), bandwidth=0.5)
    assert np.isfinite(flat).all() and flat[0, 0] > 0 > flat[2, 0] and np.all(flat[:, 1] == 0)
    np.testing.assert_array_equal(one, 0.0)


def test_a_lam_run_started_at_one_point_is_refused_at_construction():
    """Until 2026-12-02 ``Simulation(..., lam=0.01, integrator="baoab")`` from the README's start with every particle
    at one point (``np.tile([-1, 0], (N, 1))``) built an all-NaN entropy force in silence (KDE bandwidth 0, kNN
    entropy -inf) and the second step raised ``NonFiniteError: entropy_knn: samples have 100 non-finite value(s)``,
    which named neither lam nor the start. Now the construction says that lam > 0 needs spread in theta0; the same
    start with a little noise runs and stays finite."""
    from hhld.dynamics import Simulation
    from hhld.landscapes import double_well_2d

    lw = double_well_2d()
    kw = dict(dt=0.01, D=0.3, integrator="baoab", lam=0.01)
    start = np.tile([-1.0, 0.0], (50, 1))
    with pytest.raises(ValueError, match=r"lam=0\.01 > 0 needs spread in theta0: 50 of its N=50 particles sit at the "
                                         r"same point \[-1\.0, 0\.0\].*add small noise to theta0"):
        Simulation(lw, start, rng=np.random.default_rng(0), **kw)
    with pytest.raises(ValueError, match=r"lam=0\.01 > 0 .* needs more than 3 particles; theta0 has 3"):
        Simulation(lw, start[:3], rng=np.random.default_rng(0), **kw)
    two_points = np.vstack([start[:25], start[:25] + 1.0])  # spread, but 25 particles on each point: S = -inf
    with pytest.raises(ValueError, match=r"needs spread in theta0: 25 of its N=50 particles .*2 distinct point"):
        Simulation(lw, two_points, rng=np.random.default_rng(0), **kw)
    noisy = start + 1e-3 * np.random.default_rng(1).standard_normal(start.shape)
    sim = Simulation(lw, noisy, rng=np.random.default_rng(0), **kw).run(5)
    assert np.isfinite(sim.state.theta).all() and np.isfinite(sim.extra_force.last_entropy)


def test_entropy_coupling_on_a_collapsed_ensemble_is_a_clear_error():
    """Until 2026-12-02 the coupling on an ensemble with more than k particles at one point returned a NaN force
    (the kNN entropy -inf times a 0/0 score); now it raises, naming lam and the collapse."""
    from hhld.observables import DegenerateSamplesWarning

    with pytest.warns(DegenerateSamplesWarning), pytest.raises(ValueError, match=r"lam=0\.1: the ensemble has "
                                                                                 r"collapsed .*-inf"):
        EntropyCoupling(0.1)(np.zeros((50, 2)))
