"""Entropy estimators on degenerate and extreme-scale samples (issue 11, second audit).

Duplicated points give ``-inf`` (the entropy of a distribution with an atom) with a
DegenerateSamplesWarning naming them, never a clamped finite number; the k-NN estimate is exact
under rescaling (``S(c x) = S(x) + d log c``) at any scale a float64 can hold.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from hhld.landscapes import Quadratic
from hhld.observables import DegenerateSamplesWarning, entropy_histogram, entropy_knn, kl_to_gibbs


def _normal(n=2000, d=1, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_duplicates_give_minus_inf_with_a_warning_naming_them():
    x = _normal(300)
    dup = np.vstack([x, x[:5], x[:5], x[:5]])           # samples 0..4 appear 4 times: k = 3 neighbours at 0
    with pytest.warns(DegenerateSamplesWarning, match=r"20 of N=315 samples have k=3 or more exact duplicates"):
        assert entropy_knn(dup, k=3) == -math.inf
    with pytest.warns(DegenerateSamplesWarning):
        assert kl_to_gibbs(dup, Quadratic([1.0], box=[(-12.0, 12.0)]), 1.0) == math.inf
    with pytest.warns(DegenerateSamplesWarning, match="same point"):
        assert entropy_knn(np.ones((40, 3))) == -math.inf
    with pytest.warns(DegenerateSamplesWarning, match="axis 1"):
        assert entropy_histogram(np.c_[x, np.zeros(len(x))]) == -math.inf


def test_fewer_duplicates_than_k_neighbours_stay_finite_and_silent():
    """Negative control: 3 copies of a point with k = 3 leave its 3rd neighbour at a distance > 0."""
    x = _normal(300)
    dup = np.vstack([x, x[:5], x[:5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(entropy_knn(dup, k=3))


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1e150, 1e300 / 8])
def test_knn_entropy_is_exact_under_rescaling(d, scale):
    x = _normal(1500, d, seed=d)
    assert entropy_knn(x * scale) == pytest.approx(entropy_knn(x) + d * math.log(scale), abs=1e-9)
    # and the value at scale 1 is the Gaussian's (the estimator itself, not only its shift)
    assert entropy_knn(x) == pytest.approx(0.5 * d * math.log(2 * math.pi * math.e), abs=0.05 * d)
