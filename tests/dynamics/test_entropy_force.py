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
