import math

import numpy as np
import pytest

from hhld.quantum import units


def test_paper_and_document_constructors():
    u = units.QuantumUnits.from_learning(epsilon=0.1, gamma=2.0, D=0.5, lam=4.0)
    assert math.isclose(u.m, 0.1 / 4.0)                        # (2.10)
    assert math.isclose(u.hbar, 0.1 * math.sqrt(4 * 0.5 / 8.0))  # (2.11)
    assert math.isclose(units.QuantumUnits.from_eta_D(4.0, 0.01).hbar, 0.2)
    assert math.isclose(units.hbar_from_chemical_potential(3.0, 0.5), 3.0 * 0.5 / (2 * math.pi))  # (3.12)
    with pytest.raises(ValueError, match="D"):
        units.QuantumUnits.from_eta_D(1.0, -1.0)
    with pytest.raises(ValueError, match="mu"):
        units.hbar_from_chemical_potential(0.0, 1.0)


def test_number_uncertainty_ideal_gas():
    # ideal classical gas: Omega = -T z exp(mu/T) => <N> = z e^{mu/T}, Var N = <N> = T |Omega''|
    T, z = 0.7, 50.0
    omega = lambda mu: -T * z * np.exp(mu / T)  # noqa: E731
    mu = 0.3
    exact = math.sqrt(z * math.exp(mu / T))
    assert abs(units.number_uncertainty(omega, mu, T) / exact - 1) < 1e-6
    mus = np.linspace(0.0, 0.6, 601)
    dn = units.number_uncertainty(omega(mus), mus, T)
    assert abs(dn[300] / exact - 1) < 1e-5
