"""The documents' API runs a documents-style script unchanged and gives statistically the same results."""
import math

import numpy as np
import pytest
from scipy import stats

import hhld
from hhld import HeisenbergLearning


# A user's script written against the documents (its own code).
def double_well_loss(theta):
    x, y = theta[0], theta[1]
    return (x ** 2 - 1) ** 2 + y ** 2


def double_well_grad(theta):
    x, y = theta[0], theta[1]
    return np.array([4 * x * (x ** 2 - 1), 2 * y])


def test_documents_script_runs_unchanged():
    model = HeisenbergLearning(loss_fn=double_well_loss, loss_grad_fn=double_well_grad, dim=2, eta=0.1, D=0.05,
                               lam=0.001, seed=0)
    assert model.hbar == pytest.approx(math.sqrt(0.1 * 0.05))
    results = model.train(np.array([0.5, 0.5]), n_steps=500, dt=0.01)
    assert set(results) == {"trajectory", "losses", "consolidations", "transitions", "final_theta", "final_loss"}
    assert results["trajectory"].shape == (501, 2)
    assert results["losses"].shape == (500,) and results["consolidations"].shape == (500,)
    assert results["final_loss"] == results["losses"][-1]
    assert all(t > 10 for t in results["transitions"])
    np.testing.assert_allclose(results["trajectory"][0], [0.5, 0.5])
    assert np.isfinite(model.consolidation_ratio(np.array([0.3, 0.1])))
    theta = model.step(np.array([0.5, 0.5]), 0.0, dt=0.01)
    assert theta.shape == (2,)
    jumped = model.apply_tunneling(np.zeros(2))
    assert np.linalg.norm(jumped) == pytest.approx(3 * model.hbar)
    # equal-loss wells: the documents' straight-line action is 0, so P = 1
    assert model.tunneling_probability(np.array([-1.0, 0.0]), np.array([1.0, 0.0])) == 1.0
    p = model.tunneling_probability(np.array([1.0, 0.0]), np.array([0.0, 0.0]))
    assert p == pytest.approx(math.exp(-math.sqrt(2 * 0.1 * 1.0) * 1.0 / model.hbar))


def test_seeded_runs_reproducible_and_verbose(capsys):
    a = HeisenbergLearning(double_well_loss, double_well_grad, 2, D=0.05, seed=3).train(np.zeros(2), 200)
    b = HeisenbergLearning(double_well_loss, double_well_grad, 2, D=0.05, seed=3).train(np.zeros(2), 200)
    np.testing.assert_array_equal(a["trajectory"], b["trajectory"])
    assert capsys.readouterr().out == ""
    HeisenbergLearning(double_well_loss, double_well_grad, 2, D=0.05, seed=3, verbose=True).train(np.zeros(2), 200)
    out = capsys.readouterr().out
    assert out.count("Phase transition detected") == len(a["transitions"])


def _reference_loop(rng, n_steps, dt, eta, D, threshold=0.5):
    """An independent transcription of the documents' train loop (one particle)."""
    theta = np.array([0.5, 0.5])
    hbar = math.sqrt(eta * D)
    n_tr = 0
    for step in range(n_steps):
        theta = theta - double_well_grad(theta) * dt + math.sqrt(2 * D * dt) * rng.standard_normal(2)
        C = np.sum(double_well_grad(theta) ** 2) / (D * 2)
        if C < threshold and step > 10:
            u = rng.standard_normal(2)
            theta = theta + 3 * hbar * u / np.linalg.norm(u)
            n_tr += 1
    return double_well_loss(theta), theta[0], n_tr


def test_statistically_same_as_documents_loop():
    n_runs, n_steps = 120, 300
    rng = np.random.default_rng(123)
    ref = np.array([_reference_loop(rng, n_steps, 0.01, 0.1, 0.05) for _ in range(n_runs)])
    ours = []
    for i in range(n_runs):
        r = HeisenbergLearning(double_well_loss, double_well_grad, 2, eta=0.1, D=0.05, seed=10_000 + i).train(
            np.array([0.5, 0.5]), n_steps=n_steps, dt=0.01)
        ours.append((double_well_loss(r["final_theta"]), r["final_theta"][0], len(r["transitions"])))
    ours = np.array(ours)
    assert stats.ks_2samp(ref[:, 0], ours[:, 0]).pvalue > 1e-3  # final loss distribution
    assert stats.ks_2samp(ref[:, 2], ours[:, 2]).pvalue > 1e-3  # number of transitions
    assert abs((ref[:, 1] > 0).mean() - (ours[:, 1] > 0).mean()) < 0.2


def test_bad_inputs_named():
    with pytest.raises(ValueError, match="D must be >= 0"):
        HeisenbergLearning(double_well_loss, double_well_grad, 2, D=-0.1)
    with pytest.raises(ValueError, match="eta must be > 0"):
        HeisenbergLearning(double_well_loss, double_well_grad, 2, eta=0.0)
    m = HeisenbergLearning(double_well_loss, double_well_grad, 2)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        m.train(np.zeros(3), 10)
    with pytest.raises(ValueError, match="dt must be > 0"):
        m.train(np.zeros(2), 10, dt=0.0)


def test_nan_gradient_names_step_and_particle():
    def bad_grad(theta):
        return np.array([np.nan, 0.0]) if theta[0] > 0.7 else np.array([0.0, 0.0])

    m = HeisenbergLearning(double_well_loss, bad_grad, 2, D=0.0, seed=0)
    with pytest.raises(hhld.NonFiniteError, match="particle 0"):
        m.train(np.array([0.8, 0.0]), 5)


def test_landscape_instance_accepted():
    m = HeisenbergLearning(hhld.landscapes.double_well_2d(), None, dim=2, D=0.05, seed=1)
    assert m.train(np.zeros(2), 20)["trajectory"].shape == (21, 2)
