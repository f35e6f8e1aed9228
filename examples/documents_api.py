"""The documents' HeisenbergLearning API, used exactly as the documents use it.

Seeded with ``np.random.seed`` as a documents' script is, it prints what the documents' own
class prints (the "Phase transition detected" lines included) and returns the same numbers,
bit for bit. Then the same run with an explicit generator (``rng=``), which leaves NumPy's
global state alone, and the documents' ``get_consolidation_metrics``.

Run: python examples/documents_api.py
"""
import numpy as np

from hhld import HeisenbergLearning, get_consolidation_metrics


def double_well_loss(theta):
    x, y = theta[0], theta[1]
    return (x**2 - 1) ** 2 + y**2


def double_well_grad(theta):
    x, y = theta[0], theta[1]
    return np.array([4 * x * (x**2 - 1), 2 * y])


# --- the documents' Example 1, as their script runs it (NumPy's global generator)
np.random.seed(0)
hhld = HeisenbergLearning(loss_fn=double_well_loss, loss_grad_fn=double_well_grad, dim=2, eta=0.1, D=0.05,
                          lam=0.001)
print(f"Effective hbar = {hhld.hbar:.4f}")
results = hhld.train(np.array([0.5, 0.5]), n_steps=500, dt=0.01)
print(f"\nFinal position: theta = [{results['final_theta'][0]:.3f}, {results['final_theta'][1]:.3f}]")
print(f"Final loss: {results['final_loss']:.6f}")
print(f"Transitions detected: {len(results['transitions'])}")

# --- the same with an explicit generator and no printing: the global state is not touched
quiet = HeisenbergLearning(double_well_loss, double_well_grad, dim=2, eta=0.1, D=0.05,
                           rng=np.random.default_rng(0), verbose=False)
r2 = quiet.train(np.array([0.5, 0.5]), n_steps=500, dt=0.01)
print(f"\nWith rng=np.random.default_rng(0): final loss {r2['final_loss']:.6f}, "
      f"{len(r2['transitions'])} transitions (another random stream, the same dynamics)")


# --- the documents' "How to Use This Today": C = sum(g^2) / (lr / batch_size)
class _Optimizer:  # anything with param_groups[0]["lr"], e.g. a torch optimizer
    param_groups = [{"lr": 0.01}]


grad = double_well_grad(results["final_theta"])
print(f"get_consolidation_metrics(optimizer, grad, batch_size=32) = "
      f"{get_consolidation_metrics(_Optimizer(), grad, 32):.4g}")
