"""The documents' HeisenbergLearning API, used exactly as the documents use it.

Run: python examples/documents_api.py
"""
import numpy as np

from hhld import HeisenbergLearning


def double_well_loss(theta):
    x, y = theta[0], theta[1]
    return (x**2 - 1) ** 2 + y**2


def double_well_grad(theta):
    x, y = theta[0], theta[1]
    return np.array([4 * x * (x**2 - 1), 2 * y])


hhld = HeisenbergLearning(loss_fn=double_well_loss, loss_grad_fn=double_well_grad, dim=2, eta=0.1, D=0.05,
                          lam=0.001, seed=0, verbose=True)
print(f"Effective hbar = {hhld.hbar:.4f}")
results = hhld.train(np.array([0.5, 0.5]), n_steps=500, dt=0.01)
print(f"Final position: {results['final_theta']}, final loss {results['final_loss']:.6f}")
print(f"Transitions detected: {len(results['transitions'])}")
