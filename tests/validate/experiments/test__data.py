"""validate.experiments._data: the modular-addition split, label noise, MNIST-1D made locally."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from hhld.validate.experiments import _data


def test_modular_addition_split():
    d = _data.modular_addition(7, 0.3, seed=3)
    x = torch.cat([d["x_train"], d["x_test"]])
    assert x.shape == (49, 2) and len({tuple(r) for r in x.tolist()}) == 49
    assert d["x_train"].shape[0] == round(0.3 * 49)
    assert torch.equal(d["y_train"], (d["x_train"][:, 0] + d["x_train"][:, 1]) % 7)
    d2 = _data.modular_addition(7, 0.3, seed=3)
    assert torch.equal(d["x_train"], d2["x_train"])


def test_label_noise_changes_exactly_the_fraction():
    y = torch.arange(100) % 10
    yn, mask = _data.add_label_noise(y, 0.2, 10, seed=0)
    assert int(mask.sum()) == 20
    assert bool((yn[mask] != y[mask]).all()) and torch.equal(yn[~mask], y[~mask])


def test_mnist1d_generated_locally_keeps_global_random_state():
    pytest.importorskip("mnist1d")
    np.random.seed(123)
    random.seed(5)
    before_np, before_py = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(5)
    Xtr, ytr, Xte, yte = _data._mnist1d_arrays.__wrapped__(100, 0)
    assert np.random.random() == before_np and random.random() == before_py
    assert Xtr.shape == (80, 40) and Xte.shape == (20, 40) and set(np.unique(ytr)) <= set(range(10))
