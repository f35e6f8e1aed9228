"""Data sets of the training experiments; all of them are made or installed offline.

* :func:`modular_addition` -- the table ``(a, b) -> (a + b) mod p`` split at random into a
  training fraction and a test set (Power et al. 2022; Nanda et al. 2023).
* :func:`digits` -- scikit-learn's bundled 8x8 digits (1,797 images, shipped inside the
  scikit-learn wheel; nothing is downloaded).
* :func:`mnist1d` -- MNIST-1D (Greydanus 2020) *generated locally* by the ``mnist1d``
  package's generator (``mnist1d.data.make_dataset`` with its default arguments and our
  seed); its downloader is never called. The generator seeds numpy's and Python's global
  random state, so the previous global state is saved and restored around the call.
* :func:`add_label_noise` -- replaces a fraction of labels by a different class.

Every function takes an explicit seed and returns torch tensors on the CPU.
"""
from __future__ import annotations

import random
from functools import lru_cache

import numpy as np
import torch

__all__ = ["modular_addition", "digits", "mnist1d", "add_label_noise", "DATA_SOURCES"]

#: what the report says about where each data set came from
DATA_SOURCES = {
    "modular_addition": "all pairs (a, b) in Z_p x Z_p with label (a+b) mod p, split at random",
    "digits": "scikit-learn's bundled digits (8x8, 1,797 images; installed with scikit-learn, no download)",
    "mnist1d": "MNIST-1D generated locally by mnist1d.data.make_dataset (the package's generator, "
               "default arguments, our seed; its downloader is not used)",
}


def modular_addition(p: int, train_frac: float, seed: int) -> dict:
    """All ``p*p`` pairs ``x = (a, b)`` (int64, shape ``(p*p, 2)``) with ``y = (a+b) mod p``,
    a random split into ``round(train_frac * p*p)`` training pairs and the rest for testing."""
    if p < 2:
        raise ValueError(f"p must be >= 2, got {p}")
    if not 0.0 < train_frac < 1.0:
        raise ValueError(f"train_frac must be in (0, 1), got {train_frac}")
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    x = torch.stack([a, b], 1)
    y = (a + b) % p
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(p * p, generator=g)
    n_tr = int(round(train_frac * p * p))
    tr, te = perm[:n_tr], perm[n_tr:]
    return {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te], "p": p}


@lru_cache(maxsize=4)
def _digits_arrays():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X.astype(np.float64), y.astype(np.int64)


def digits(seed: int, n_train: int | None = 1200, standardize: bool = True, dtype=torch.float32):
    """``(X_train, y_train, X_test, y_test)`` from scikit-learn's bundled digits, shuffled with
    ``seed``; features scaled by the training set's mean and std (or /16 if not standardize)."""
    X, y = _digits_arrays()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    X, y = X[perm], y[perm]
    n_train = len(y) // 2 if n_train is None else int(n_train)
    if not 0 < n_train < len(y):
        raise ValueError(f"n_train must be in (0, {len(y)}), got {n_train}")
    Xtr, Xte = X[:n_train], X[n_train:]
    if standardize:
        mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-8
        sd[sd < 1e-6] = 1.0
        Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    else:
        Xtr, Xte = Xtr / 16.0, Xte / 16.0
    t = lambda a: torch.tensor(a, dtype=dtype)  # noqa: E731
    return t(Xtr), torch.tensor(y[:n_train]), t(Xte), torch.tensor(y[n_train:])


@lru_cache(maxsize=4)
def _mnist1d_arrays(num_samples: int, seed: int):
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise ImportError("MNIST-1D needs the 'mnist1d' package: pip install 'hhld[data]' (or mnist1d)") from exc
    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)  # the generator; never get_dataset (which downloads)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return (np.asarray(data["x"], np.float32), np.asarray(data["y"], np.int64),
            np.asarray(data["x_test"], np.float32), np.asarray(data["y_test"], np.int64))


def mnist1d(num_samples: int = 5000, seed: int = 0):
    """``(X_train, y_train, X_test, y_test)`` of MNIST-1D (40 features, 10 classes, 80/20 split)
    generated locally with ``seed``."""
    Xtr, ytr, Xte, yte = _mnist1d_arrays(int(num_samples), int(seed))
    return torch.tensor(Xtr), torch.tensor(ytr), torch.tensor(Xte), torch.tensor(yte)


def add_label_noise(y: torch.Tensor, frac: float, n_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the labels of ``round(frac * n)`` random samples by a uniformly drawn *different*
    class; returns ``(noisy labels, boolean mask of the corrupted samples)``."""
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"label-noise fraction must be in [0, 1], got {frac}")
    g = torch.Generator().manual_seed(int(seed))
    n = y.shape[0]
    k = int(round(frac * n))
    idx = torch.randperm(n, generator=g)[:k]
    shift = torch.randint(1, n_classes, (k,), generator=g)
    out = y.clone()
    out[idx] = (y[idx] + shift) % n_classes
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    return out, mask
