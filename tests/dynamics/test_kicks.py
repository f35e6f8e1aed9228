"""The documents' tunneling rule (hhld.dynamics.kicks): detection, kicks, and the old module path."""
import numpy as np
import pytest
import torch

from hhld.dynamics import TunnelingPolicy, kick, random_unit_directions


def test_unit_directions_are_unit_and_isotropic():
    u = random_unit_directions(np.random.default_rng(0), 20000, np.zeros((1, 3)))
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, rtol=1e-12)
    assert np.abs(u.mean(0)).max() < 0.03  # isotropic: mean 0 within ~4 standard errors (1/sqrt(3 n))
    tilted = u + np.array([0.04, 0.0, 0.0])  # negative control: a slight preferred direction is caught
    assert np.abs(tilted.mean(0)).max() > 0.03
    ut = random_unit_directions(torch.Generator().manual_seed(0), 5, torch.zeros(1, 2))
    assert torch.allclose(ut.norm(dim=1), torch.ones(5, dtype=ut.dtype))


def test_kick_moves_only_the_masked_particles_by_the_amplitude():
    theta = np.zeros((6, 2))
    mask = np.array([0, 1, 0, 0, 1, 0], dtype=bool)
    out = kick(np.random.default_rng(1), theta, mask, 0.7)
    assert np.all(theta == 0)  # input untouched
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 0.7 * mask)


def test_policy_detects_low_C_after_the_step_guard():
    pol = TunnelingPolicy(eta=2.0, D=0.5)
    assert pol.hbar == pytest.approx(1.0) and pol.amplitude == pytest.approx(3.0)
    grad = np.array([[0.1, 0.0], [3.0, 0.0]])  # C = 0.01 and 9 (d = 2, D = 0.5)
    mask, C = pol.detect(grad, step=11)
    np.testing.assert_allclose(C, [0.01, 9.0])
    assert mask.tolist() == [True, False]
    assert not pol.detect(grad, step=10)[0].any()  # the documents' "step > 10"
    with pytest.raises(ValueError, match="eta must be > 0"):
        TunnelingPolicy(eta=0.0, D=0.5)


def test_former_module_path_still_imports():
    from hhld.dynamics import kicks
    from hhld.dynamics.tunneling import TunnelingPolicy as T

    assert T is TunnelingPolicy and kicks.kick is kick
