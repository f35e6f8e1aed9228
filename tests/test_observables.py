"""Observables: documents' consolidation forms, regimes, uncertainty product, entropies, KL."""
import math

import numpy as np
import pytest
import torch

import hhld
from hhld.landscapes import Quadratic, double_well_2d
from hhld.observables import (
    RegimeThresholds,
    classify_regime,
    consolidation_ratio,
    consolidation_ratio_sgd,
    fit_decay_rate,
    get_consolidation_metrics,
    entropy_histogram,
    entropy_knn,
    free_energy,
    kl_to_gibbs,
    log_partition,
    uncertainty_product,
)


def test_consolidation_ratio_documents_forms():
    g = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(consolidation_ratio(g, 0.5), [25.0, 0.0])
    assert consolidation_ratio(torch.tensor([3.0, 4.0]), 0.5).item() == pytest.approx(25.0)
    assert consolidation_ratio(25.0, 0.5, dim=2) == pytest.approx(25.0)
    assert consolidation_ratio_sgd(2.0, lr=0.1, batch_size=32) == pytest.approx(640.0)
    with pytest.raises(ValueError, match="D must be > 0"):
        consolidation_ratio(g, 0.0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        consolidation_ratio_sgd(1.0, lr=-1, batch_size=2)


def test_regimes_follow_the_table():
    labels = classify_regime(np.array([0.1, 0.3, 0.6, 0.99, 1.0, 3.0, 5.0, 5.01]))
    assert list(labels) == ["quantum", "transition", "transition", "transition", "intermediate",
                            "intermediate", "intermediate", "classical"]
    t = RegimeThresholds(quantum_below=2.0, classical_above=10.0)
    assert classify_regime(6.0, t) == "intermediate"
    # one float (the monitor's path, no arrays) gives the array path's label, boundaries included
    for thr in (None, t):
        tt = thr or RegimeThresholds()
        cs = [0.0, 1e-300, tt.transition_low, np.nextafter(tt.transition_low, 0), tt.quantum_below,
              np.nextafter(tt.quantum_below, 0), tt.classical_above, np.nextafter(tt.classical_above, np.inf),
              0.3, 2.5, 7.0, 1e300, np.inf]
        assert [classify_regime(float(c), thr) for c in cs] == list(classify_regime(np.array(cs), thr))
    with pytest.raises(ValueError, match="C contains NaN"):
        classify_regime(float("nan"))
    with pytest.raises(ValueError):
        RegimeThresholds(quantum_below=6, classical_above=5)


def test_uncertainty_product_gaussian_quadratic():
    rng = np.random.default_rng(0)
    lam = np.array([1.0, 4.0])
    D = 0.3
    x = rng.normal(size=(200_000, 2)) * np.sqrt(D / lam)  # Gibbs density of 0.5 lam x^2
    u = uncertainty_product(x, Quadratic(lam).grad(x))
    np.testing.assert_allclose(u.per_coordinate, D, rtol=0.01)  # equality case of Stein's bound
    np.testing.assert_allclose(u.covariance, D, rtol=0.01)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        uncertainty_product(x, x[:, :1])


@pytest.mark.parametrize("d", [1, 2, 3])
def test_entropy_estimators_on_gaussian(d):
    rng = np.random.default_rng(d)
    sd = 0.7
    x = rng.normal(size=(20_000, d)) * sd
    exact = 0.5 * d * math.log(2 * math.pi * math.e * sd * sd)
    assert entropy_knn(x) == pytest.approx(exact, abs=0.03 * d)
    assert entropy_histogram(x, bins=30 if d < 3 else 15) == pytest.approx(exact, abs=0.1 * d)


def test_kl_and_free_energy_identity():
    rng = np.random.default_rng(3)
    q = Quadratic(np.array([1.0]), box=[(-8, 8)])
    D = 0.5
    gibbs = rng.normal(size=(20_000, 1)) * math.sqrt(D)
    assert abs(kl_to_gibbs(gibbs, q, D)) < 0.02
    wide = rng.normal(size=(20_000, 1)) * 2 * math.sqrt(D)
    kl_exact = 0.5 * (4 - 1 - math.log(4))
    assert kl_to_gibbs(wide, q, D) == pytest.approx(kl_exact, abs=0.03)
    F_star = -D * log_partition(q, D)
    assert free_energy(wide, q, D) - F_star == pytest.approx(D * kl_exact, abs=0.02)


def test_log_partition_double_well():
    lw = double_well_2d()
    assert np.isfinite(log_partition(lw, 0.1))
    with pytest.raises(ValueError, match="d <= 3"):
        log_partition(Quadratic(np.ones(4)), 1.0)


def test_log_partition_warns_when_the_box_cuts_gibbs_mass():
    import warnings

    from hhld._validation import BoxTruncationWarning
    from hhld.observables import kl_to_gibbs, log_partition

    # Quadratic's box [-3, 3] at D = 1 misses 0.27% of Z (log Z short by 0.0027)
    with pytest.warns(BoxTruncationWarning, match=r"box \[\(-3.0, 3.0\)\].*log Z"):
        lz = log_partition(Quadratic([1.0]), 1.0)
    assert 0.5 * math.log(2 * math.pi) - lz == pytest.approx(0.0027, abs=3e-4)
    with pytest.warns(BoxTruncationWarning):
        kl_to_gibbs(np.random.default_rng(0).normal(size=(500, 1)), Quadratic([1.0]), 1.0)
    with warnings.catch_warnings():  # a box that holds the density: silent and exact
        warnings.simplefilter("error")
        lz = log_partition(Quadratic([1.0]), 1.0, box=[(-9, 9)])
    assert lz == pytest.approx(0.5 * math.log(2 * math.pi), abs=1e-9)


def test_documents_get_consolidation_metrics_every_gradient_form():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model(torch.ones(4, 3)).pow(2).sum().backward()
    grads = [p.grad for p in model.parameters()]
    flat = torch.cat([g.reshape(-1) for g in grads])
    want = float((flat.double() ** 2).sum()) / (0.05 / 16)  # the documents' sum(g**2) / (lr / B)
    assert get_consolidation_metrics(opt, grads, 16) == pytest.approx(want, rel=1e-12)
    assert get_consolidation_metrics(opt, flat, 16) == pytest.approx(want, rel=1e-6)
    assert get_consolidation_metrics(opt, flat.numpy(), 16) == pytest.approx(want, rel=1e-6)
    assert get_consolidation_metrics(opt, grads + [None], 16) == pytest.approx(want, rel=1e-12)
    assert hhld.get_consolidation_metrics is get_consolidation_metrics
    # the same number as the observable on the squared norm
    assert consolidation_ratio_sgd(float((flat.double() ** 2).sum()), 0.05, 16) == pytest.approx(want, rel=1e-12)


def test_squared_norm_observable_refuses_a_vector_and_bad_gradients():
    g = np.ones(385)
    with pytest.raises(ValueError, match=r"expects the squared norm .*shape \(385,\).*get_consolidation_metrics"):
        consolidation_ratio_sgd(g, lr=0.1, batch_size=8)
    with pytest.raises(ValueError, match="grad_sq_norm must be >= 0"):
        consolidation_ratio_sgd(-1.0, lr=0.1, batch_size=8)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(hhld.NonFiniteError, match="non-finite"):
        get_consolidation_metrics(opt, np.array([np.nan, 1.0]), 8)
    with pytest.raises(ValueError, match="empty list"):
        get_consolidation_metrics(opt, [None], 8)
    with pytest.raises(TypeError, match="param_groups"):
        get_consolidation_metrics(object(), g, 8)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        get_consolidation_metrics(opt, g, 0)


def test_fit_decay_rate_late_window():
    t = np.linspace(0, 10, 101)
    y = np.exp(-3 * t) + 5.0 * np.exp(-8 * t)  # the fast mode is gone in the late half
    fit = fit_decay_rate(t, y)
    assert fit.rate == pytest.approx(3.0, rel=1e-6) and fit.t_range[0] >= 4.0
    assert fit_decay_rate(t, y, late_fraction=0.0).rate > 3.05  # negative control: the early part biases it
    noisy = np.exp(-2 * t) * np.exp(np.random.default_rng(0).normal(0, 0.01, t.size))
    f2 = fit_decay_rate(t, noisy)
    assert abs(f2.rate - 2.0) < 4 * f2.stderr
    with pytest.raises(ValueError, match="needs 3 points"):
        fit_decay_rate(t, np.exp(-50 * t))


def test_one_log_partition_and_one_box_check():
    """observables.log_partition is theory.gibbs_log_partition; the Fokker-Planck solver, the
    FP <-> Schrodinger map and log Z warn through the same check (same message)."""
    import warnings

    import hhld
    from hhld._validation import BoxTruncationWarning
    from hhld.fokker_planck import FokkerPlanck
    from hhld.observables import log_partition
    from hhld.quantum import fp_map, make_grid

    assert log_partition is hhld.theory.gibbs_log_partition
    q = Quadratic([1.0])
    messages = []
    for call in (lambda: log_partition(q, 1.0), lambda: FokkerPlanck(q, D=1.0, cells=200),
                 lambda: fp_map.fp_generator(make_grid(200, q.box), q, 1.0)):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            call()
        (w,) = [r for r in rec if issubclass(r.category, BoxTruncationWarning)]
        messages.append(str(w.message).split(":")[0])
    assert len(set(messages)) == 1 and "cuts off significant Gibbs mass" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log_partition(q, 1.0, box=[(-9.0, 9.0)])  # negative control: a wide box does not warn
