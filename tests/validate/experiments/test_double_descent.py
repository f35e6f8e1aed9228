"""double_descent: the random-features peak at N/n = 1 and the MLP width sweep."""
from __future__ import annotations

import math

import numpy as np
import pytest


@pytest.mark.slow
def test_double_descent_smallest(run_smallest, find_row):
    cfg, results, rep = run_smallest("double_descent", through_json=True)
    rf = next(r for c, r in results if c.key["part"] == "random_features")
    ratios = rf["ratios"]
    i_pk = int(np.argmax(rf["test_mse"]))
    i_one = ratios.index(1.0)
    assert abs(i_pk - i_one) <= 1  # the random-features peak at N/n = 1 (within one grid step)
    assert rf["test_mse"][i_pk] > 3 * max(rf["test_mse"][0], rf["test_mse"][-1])
    assert max(rf["train_mse"][i_one:]) < 1e-8  # interpolation from N = n on
    assert find_row(rep, "Random-features test-error peak").verdict == "holds"
    mlp = sorted(((c.key["width"], r) for c, r in results if c.key["part"] == "mlp"), key=lambda t: t[0])
    losses = [r["test_loss"] for _, r in mlp]
    # double descent: the widest model beats the worst one, which is not the narrowest
    i_max = int(np.argmax(losses))
    assert 0 < i_max < len(losses) - 1 and losses[-1] < losses[i_max]
    assert mlp[-1][1]["train_acc"] == 1.0  # the widest model fits the noisy labels
    assert all(r["C"] > 0 and math.isfinite(r["C"]) for _, r in mlp)
    find_row(rep, "'C(t) collapses'")
