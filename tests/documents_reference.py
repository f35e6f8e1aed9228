"""References for the documents' API tests and benchmark (not a test module).

* :class:`ReferenceHeisenbergLearning` -- the documents' ``HeisenbergLearning`` written again,
  step by step, for the tests: the same user-function calls, the same ``np.random`` calls in the
  same order and the same arithmetic in the same order as the documents' reference code.
* :func:`load_documents_class` -- the documents' own class, read from the specification
  (``../shared/spec/000_*.txt`` next to the repository) at run time, never copied into the
  project; ``None`` when the specification is not there.
* :func:`documents_examples` -- the numeric content of the documents' Examples 1-4 for a given
  class (what their scripts print and plot), seeded with ``np.random.seed``.
"""
from __future__ import annotations

import contextlib
import io
import pathlib

import numpy as np

SPEC_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "spec"


class ReferenceHeisenbergLearning:
    """The documents' one-particle class, step by step (see the module docstring)."""

    def __init__(self, loss_fn, loss_grad_fn, dim, eta=0.1, D=0.01, lam=0.001):
        self.loss_fn, self.loss_grad_fn = loss_fn, loss_grad_fn
        self.dim, self.eta, self.D, self.lam = dim, eta, D, lam
        self.hbar = np.sqrt(eta * D)

    def step(self, theta, t, dt=0.01):
        g = self.loss_grad_fn(theta)          # 1. gradient at the current point
        xi = np.random.randn(self.dim)        # 2. one draw of dim normals
        moved = theta + (-g) * dt             # 3. drift first ...
        return moved + np.sqrt(2 * self.D * dt) * xi   # ... then the scaled noise

    def consolidation_ratio(self, theta):
        g = self.loss_grad_fn(theta)
        return np.sum(g ** 2) / (self.D * self.dim)

    def tunneling_probability(self, theta_current, theta_target):
        rise = max(self.loss_fn(theta_target) - self.loss_fn(theta_current), 0)
        action = np.sqrt(2 * self.eta * rise) * np.linalg.norm(theta_target - theta_current)
        return np.exp(-action / self.hbar)

    def apply_tunneling(self, theta):
        u = np.random.randn(self.dim)
        u = u / np.linalg.norm(u)
        return theta + (3.0 * self.hbar) * u

    def train(self, theta_init, n_steps=1000, dt=0.01, transition_threshold=0.5):
        theta = theta_init.copy()
        path, losses, cons, kicked = [theta_init.copy()], [], [], []
        for k in range(n_steps):
            theta = self.step(theta, k * dt, dt)
            loss = self.loss_fn(theta)
            C = self.consolidation_ratio(theta)
            losses.append(loss)
            cons.append(C)
            path.append(theta.copy())
            if C < transition_threshold and k > 10:
                print(f"Step {k}: Phase transition detected (C={C:.3f})")
                theta = self.apply_tunneling(theta)
                kicked.append(k)
        return {"trajectory": np.array(path), "losses": np.array(losses), "consolidations": np.array(cons),
                "transitions": kicked, "final_theta": theta, "final_loss": losses[-1]}


def spec_code_block() -> str | None:
    """The documents' "Minimal Working Implementation" code block, or None without the spec."""
    for path in sorted(SPEC_DIR.glob("000_*.txt")):
        text = path.read_text()
        start = text.find("```python\nimport numpy as np")
        if start < 0 or "class HeisenbergLearning" not in text[start:]:
            continue
        start += len("```python\n")
        return text[start:text.index("```", start)]
    return None


def load_documents_class():
    """The documents' own ``HeisenbergLearning`` class (executed from the spec), or None."""
    block = spec_code_block()
    if block is None:
        return None
    cls_src = block[:block.index("# ====")]
    namespace: dict = {}
    exec(compile(cls_src, "documents-HeisenbergLearning", "exec"), namespace)  # noqa: S102 - read-only spec
    return namespace["HeisenbergLearning"]


# ------------------------------------------------------------------ the examples' functions
def double_well_loss(theta):
    x, y = theta[0], theta[1]
    return (x ** 2 - 1) ** 2 + y ** 2


def double_well_grad(theta):
    x, y = theta[0], theta[1]
    return np.array([4 * x * (x ** 2 - 1), 2 * y])


def quadratic_loss(theta):
    lam = np.linspace(0.1, 10, len(theta))
    return 0.5 * np.sum(lam * theta ** 2)


def quadratic_grad(theta):
    return np.linspace(0.1, 10, len(theta)) * theta


def documents_examples(cls, seed: int, **kwargs) -> dict:
    """Examples 1-4 of the documents run with ``cls`` after ``np.random.seed(seed)``: every number
    they print or plot, and the text ``train`` prints. ``kwargs`` go to every constructor."""
    np.random.seed(seed)
    out: dict = {}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        h1 = cls(loss_fn=double_well_loss, loss_grad_fn=double_well_grad, dim=2, eta=0.1, D=0.05, lam=0.001,
                 **kwargs)
        out["example1"] = h1.train(np.array([0.5, 0.5]), n_steps=500, dt=0.01)
        h2 = cls(loss_fn=quadratic_loss, loss_grad_fn=quadratic_grad, dim=50, eta=0.05, D=0.001, lam=0.0001,
                 **kwargs)
        theta0 = np.random.randn(50) * 2.0
        out["example2_initial_loss"] = quadratic_loss(theta0)
        out["example2"] = h2.train(theta0, n_steps=1000, dt=0.01)
    out["printed"] = buf.getvalue()
    out["hbar"] = (h1.hbar, h2.hbar)
    thetas = np.array([np.random.randn(2) * np.sqrt(h1.hbar) for _ in range(1000)])
    grads = np.array([double_well_grad(t) for t in thetas])
    out["example3"] = np.sqrt(np.var(thetas, axis=0)) * np.sqrt(np.var(grads, axis=0))
    temps = np.logspace(-3, 0, 10)
    left, right = np.array([-1.0, 0.0]), np.array([1.0, 0.0])
    rates = [cls(loss_fn=double_well_loss, loss_grad_fn=double_well_grad, dim=2, eta=0.1, D=D,
                 **kwargs).tunneling_probability(left, right) for D in temps]
    out["example4"] = np.asarray(rates, dtype=np.float64)
    out["example4_fit"] = np.polyfit(1 / np.sqrt(temps), np.log(rates), 1)
    return out
