"""The documents' API: ``HeisenbergLearning`` (a thin layer over :mod:`hhld.dynamics`).

A script written against the documents' "Minimal Working Implementation" runs unchanged::

    hhld = HeisenbergLearning(loss_fn=double_well_loss, loss_grad_fn=double_well_grad,
                              dim=2, eta=0.1, D=0.05, lam=0.001)
    results = hhld.train(np.array([0.5, 0.5]), n_steps=500, dt=0.01)
    results["final_theta"], results["transitions"], ...

Differences from the reference code, all opt-in or invisible to such a script:

* randomness comes from an explicit generator (``rng=`` or ``seed=``; default a fresh
  ``np.random.default_rng()``), never the global numpy state;
* transitions are printed only with ``verbose=True``;
* ``mu`` (mobility, default 1 = the reference code's drift ``-grad L``) and ``integrator``
  expose the engine's options;
* ``lam`` is stored but, as in the reference code, has no effect on this overdamped
  dynamics: the entropy coupling acts through the Hamiltonian form
  (``hhld.dynamics.Simulation(..., integrator="baoab", lam=...)``).
"""
from __future__ import annotations

import numpy as np

from . import theory
from ._backend import default_rng
from ._validation import check_int, check_nonnegative, check_positive
from .dynamics import (
    ConsolidationObserver,
    LossObserver,
    Simulation,
    TrajectoryObserver,
    TunnelingPolicy,
    euler_maruyama,
    init_overdamped,
    random_unit_directions,
)
from .landscapes import Landscape, NumpyLandscape
from .observables import consolidation_ratio

__all__ = ["HeisenbergLearning"]


class HeisenbergLearning:
    """Heisenberg Harmonic Learning Dynamics for one parameter vector (the documents' class).

    Args:
        loss_fn: ``L(theta)`` (numpy, one point) -- or a :class:`hhld.landscapes.Landscape`,
            in which case ``loss_grad_fn`` may be None.
        loss_grad_fn: ``grad L(theta)``.
        dim: parameter dimension ``d``.
        eta: learning inertia (the documents: ``1/learning_rate``).
        D: diffusion coefficient (exploration), ``D >= 0``.
        lam: entropy coupling (kept for API compatibility; see module notes).
        rng / seed: random source (numpy ``Generator``) or its seed.
        verbose: print each detected phase transition, as the reference code does.
        mu: mobility of the drift (1 = reference code, ``1/eta`` = the master equation).
    """

    def __init__(self, loss_fn, loss_grad_fn, dim, eta=0.1, D=0.01, lam=0.001, *, rng=None, seed=None,
                 verbose: bool = False, mu: float = 1.0, integrator: str = "euler_maruyama"):
        self.dim = check_int("dim", dim, minimum=1)
        self.eta = check_positive("eta", eta)
        self.D = check_nonnegative("D", D)
        self.lam = check_nonnegative("lam", lam)
        self.mu = check_positive("mu", mu)
        self.integrator = integrator
        self.verbose = bool(verbose)
        if isinstance(loss_fn, Landscape):
            if loss_fn.dim != self.dim:
                raise ValueError(f"landscape has dim={loss_fn.dim}, but dim={dim} was given")
            self.landscape = loss_fn
        else:
            self.landscape = NumpyLandscape(loss_fn, loss_grad_fn, self.dim)
        self.loss_fn = self.landscape.value
        self.loss_grad_fn = self.landscape.grad
        self.rng = default_rng(rng, seed=seed)
        self.hbar = theory.hbar(self.eta, self.D)  # effective Planck constant sqrt(eta D)

    # ---------------------------------------------------------------- pieces
    def _point(self, theta) -> np.ndarray:
        th = np.asarray(theta, dtype=np.float64)
        if th.shape != (self.dim,):
            raise ValueError(f"theta must have shape ({self.dim},), got {th.shape}")
        return th

    def step(self, theta, t=0.0, dt=0.01):
        """One Euler-Maruyama step ``theta - mu grad L dt + sqrt(2 D dt) xi`` (t is unused,
        as in the documents)."""
        th = self._point(theta)
        state = init_overdamped(self.landscape, th[None, :])
        new = euler_maruyama(self.rng, state, self.landscape, dt=dt, D=self.D, mu=self.mu)
        return new.theta[0]

    def consolidation_ratio(self, theta) -> float:
        """The documents' ``C = ||grad L||^2 / (D d)``."""
        return float(consolidation_ratio(self.loss_grad_fn(self._point(theta)), self.D))

    def tunneling_probability(self, theta_current, theta_target) -> float:
        """The documents' ``P = exp(-S_barrier / hbar)`` with the straight-line action
        ``S = sqrt(2 eta max(L(target) - L(current), 0)) * |target - current|``."""
        S = theory.barrier_action_straight(self.landscape, self._point(theta_current),
                                           self._point(theta_target), self.eta)
        return float(theory.wkb_tunneling_probability(S, self.hbar))

    def apply_tunneling(self, theta):
        """The documents' "controlled random jump" ``theta + 3 hbar u`` (u a random unit vector)."""
        th = self._point(theta)
        u = random_unit_directions(self.rng, 1, th[None, :])[0]
        return th + 3.0 * self.hbar * u

    # ----------------------------------------------------------------- train
    def train(self, theta_init, n_steps=1000, dt=0.01, transition_threshold=0.5) -> dict:
        """The documents' training loop with phase-transition detection.

        Returns the documents' keys: ``trajectory`` ``(n_steps+1, d)``, ``losses``,
        ``consolidations`` (``(n_steps,)``, after each step, before any kick),
        ``transitions`` (0-based step indices where ``C < threshold`` and ``step > 10``),
        ``final_theta`` (after the last kick, if any) and ``final_loss`` (= ``losses[-1]``).
        """
        n_steps = check_int("n_steps", n_steps, minimum=1)
        th0 = self._point(theta_init)
        n_rec = n_steps + 2
        traj = TrajectoryObserver(every=1, max_particles=1, max_len=n_rec)
        loss = LossObserver(every=1, max_len=n_rec)
        observers = [traj, loss]
        cons = policy = None
        if self.D > 0:  # C = |grad L|^2 / (D d) is undefined at D = 0 (plain gradient descent)
            cons = ConsolidationObserver(every=1, max_len=n_rec)
            observers.append(cons)
            policy = TunnelingPolicy(eta=self.eta, D=self.D, threshold=transition_threshold, min_step=10)
        sim = Simulation(self.landscape, th0[None, :], dt=dt, D=self.D, mu=self.mu, integrator=self.integrator,
                         rng=self.rng, observers=observers, tunneling=policy)
        sim.run(n_steps, progress=n_steps >= 200_000)
        transitions = [step - 1 for step, _, _ in sim.tunneling_events]
        if self.verbose:
            for step, _, C in sim.tunneling_events:
                print(f"Step {step - 1}: Phase transition detected (C={C:.3f})")
        losses = loss.result()["mean"]
        return {
            "trajectory": traj.result()["theta"][:, 0, :],
            "losses": losses,
            "consolidations": cons.result()["mean"] if cons is not None else np.full(len(losses), np.inf),
            "transitions": transitions,
            "final_theta": np.asarray(sim.state.theta[0]),
            "final_loss": float(losses[-1]),
        }

    def __repr__(self):
        return (f"HeisenbergLearning(dim={self.dim}, eta={self.eta}, D={self.D}, lam={self.lam}, "
                f"hbar={self.hbar:.4g})")

