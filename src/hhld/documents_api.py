"""The documents' API: ``HeisenbergLearning``, the one-particle class of the documents'
"Minimal Working Implementation", as its users run it (a thin layer over :mod:`hhld.dynamics`).

A script written against the documents runs unchanged and, seeded with ``np.random.seed(s)``,
prints and returns what the documents' own class gives, bit for bit::

    np.random.seed(0)
    hhld = HeisenbergLearning(loss_fn=double_well_loss, loss_grad_fn=double_well_grad,
                              dim=2, eta=0.1, D=0.05, lam=0.001)
    results = hhld.train(np.array([0.5, 0.5]), n_steps=500, dt=0.01)
    results["final_theta"], results["transitions"], ...

What is the documents' behaviour, kept on purpose:

* **random numbers** come from NumPy's global generator (``np.random``; the documents call
  ``np.random.randn(dim)``), one draw of ``dim`` normals per step and one per kick, in the
  documents' order, unless ``rng=`` (a ``numpy.random.Generator``, or an int seed) or ``seed=``
  is given: then that generator, and the global state is left alone. (The general engine,
  :class:`hhld.dynamics.Simulation`, never touches global state.)
* **printing**: "Step N: Phase transition detected (C=...)" at every kick, as the documents'
  ``train`` prints it; ``verbose=False`` silences it.
* **the user's functions** are called on one point ``(dim,)``, at the points and in the order
  of the documents' loop (the gradient at the start of each step and again after it, for C;
  the loss after it), and the instance attributes ``loss_fn``, ``loss_grad_fn``, ``D``,
  ``eta``, ``hbar`` are read when ``train`` runs, as in the documents;
* **thresholds**: any real ``transition_threshold``; a negative one never fires.

What is added, and differs only where the documents' code would fail or go wrong silently:

* bad input gets an error naming the value (a gradient of the wrong shape or ``None``, a loss
  that is not a scalar, ``dt <= 0``, a NaN threshold ...), and a loss or gradient that becomes
  NaN/inf raises :class:`hhld.NonFiniteError` naming the step, where the documents' loop would
  finish with ``final_loss`` NaN;
* ``mu`` (mobility: 1 = the documents' code, ``1/eta`` = their master equation) and
  ``integrator`` (``"leimkuhler_matthews"``, ``"baoab"``: then the ensemble engine runs the one
  particle) expose the engine's options; ``loss_fn`` may be a :class:`hhld.landscapes.Landscape`;
  a torch ``theta_init`` (also one that requires grad) is read as its values;
* ``lam`` is stored but, as in the documents' code, has no effect on this overdamped dynamics:
  the entropy coupling acts through the Hamiltonian form
  (``hhld.dynamics.Simulation(..., integrator="baoab", lam=...)``).

Speed: one particle with Euler-Maruyama runs on :func:`hhld.dynamics.single.run_single`, the
engine's one-particle path, at least as fast as the documents' own loop
(``benchmarks/bench_documents_api.py``, ``docs/benchmarks.md``).
"""
from __future__ import annotations

import math

import numpy as np

from . import theory
from ._backend import default_rng, is_torch, to_numpy
from ._validation import check_int, check_nonnegative, check_positive
from .dynamics import (
    ConsolidationObserver,
    LossObserver,
    Simulation,
    TrajectoryObserver,
    TunnelingPolicy,
    get_integrator,
)
from .dynamics.single import checked_grad, em_step_single, run_single, unit_kick_single
from .landscapes import Landscape, NumpyLandscape
from .observables import consolidation_ratio

__all__ = ["HeisenbergLearning", "GLOBAL_NUMPY_RNG"]


class _GlobalNumpyRandom:
    """NumPy's global generator (``np.random.standard_normal``, what ``np.random.randn`` and
    ``np.random.seed`` act on), looked up at every call, in the random-source protocol of
    :mod:`hhld.dynamics` (``standard_normal(shape, dtype=...)``)."""

    def standard_normal(self, size=None, dtype=None):
        x = np.random.standard_normal(size)
        if dtype is not None and np.dtype(dtype) != np.float64:
            return np.asarray(x).astype(dtype)
        return x

    def __repr__(self) -> str:
        return "GLOBAL_NUMPY_RNG (numpy's global generator, np.random)"


#: The random source of :class:`HeisenbergLearning` when neither ``rng`` nor ``seed`` is given.
GLOBAL_NUMPY_RNG = _GlobalNumpyRandom()

_MESSAGE = "Step {step}: Phase transition detected (C={C:.3f})"


def _threshold(value) -> float:
    """The documents' ``transition_threshold``: any real number or +-inf (a negative one never
    fires); NaN and non-numbers are refused."""
    if isinstance(value, bool):
        raise TypeError(f"transition_threshold must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"transition_threshold must be a real number, got {value!r}") from exc
    if math.isnan(v):
        raise ValueError("transition_threshold must be a real number (kick when C < threshold; a negative "
                         "threshold never kicks), got nan")
    return v


class HeisenbergLearning:
    """Heisenberg Harmonic Learning Dynamics for one parameter vector (the documents' class).

    Args:
        loss_fn: ``L(theta)`` on one point ``(dim,)`` returning a scalar, or a
            :class:`hhld.landscapes.Landscape` (then ``loss_grad_fn`` may be None).
        loss_grad_fn: ``grad L(theta)`` returning an array ``(dim,)``; ``None`` with a plain
            ``loss_fn``: central finite differences.
        dim: parameter dimension ``d``.
        eta: learning inertia (the documents: ``1/learning_rate``), ``> 0``.
        D: diffusion coefficient (exploration), ``>= 0``.
        lam: entropy coupling (stored; no effect here, as in the documents' code).
        rng: ``None`` (default): NumPy's global generator, as the documents' code; a
            ``numpy.random.Generator`` (or an int seed of a fresh one): that generator.
        seed: seed of a fresh ``numpy.random.Generator`` (instead of ``rng``).
        verbose: print each detected phase transition (default True, as the documents).
        mu: mobility of the drift (1 = the documents' code, ``1/eta`` = their master equation).
        integrator: ``"euler_maruyama"`` (the documents') | ``"leimkuhler_matthews"`` | ``"baoab"``.
    """

    def __init__(self, loss_fn, loss_grad_fn, dim, eta=0.1, D=0.01, lam=0.001, *, rng=None, seed=None,
                 verbose: bool = True, mu: float = 1.0, integrator: str = "euler_maruyama"):
        self.dim = check_int("dim", dim, minimum=1)
        self.eta = check_positive("eta", eta)
        self.D = check_nonnegative("D", D)
        self.lam = check_nonnegative("lam", lam)
        self.mu = check_positive("mu", mu)
        self.integrator = get_integrator(integrator).name
        self.verbose = bool(verbose)
        if isinstance(loss_fn, Landscape):
            if loss_fn.dim != self.dim:
                raise ValueError(f"landscape has dim={loss_fn.dim}, but dim={dim} was given")
            self.loss_fn = loss_fn.value
            self.loss_grad_fn = loss_fn.grad if loss_grad_fn is None else loss_grad_fn
        else:
            if not callable(loss_fn):
                raise TypeError(f"loss_fn must be a function theta -> loss or a hhld Landscape, got {loss_fn!r}")
            if loss_grad_fn is not None and not callable(loss_grad_fn):
                raise TypeError(f"loss_grad_fn must be a function theta -> gradient (or None), got {loss_grad_fn!r}")
            self.loss_fn = loss_fn
            self.loss_grad_fn = (NumpyLandscape(loss_fn, None, self.dim).grad if loss_grad_fn is None
                                 else loss_grad_fn)
        if rng is not None and seed is not None:
            raise ValueError("give either rng= or seed=, not both")
        self.rng = GLOBAL_NUMPY_RNG if rng is None and seed is None else default_rng(rng, seed=seed)
        if not hasattr(self.rng, "standard_normal"):
            raise TypeError(f"rng must be a numpy Generator or an int seed, got {rng!r}")
        self.hbar = theory.hbar(self.eta, self.D)  # effective Planck constant sqrt(eta D)
        self._landscape_cache = None

    # ---------------------------------------------------------------- pieces
    @property
    def landscape(self) -> Landscape:
        """The current ``loss_fn`` / ``loss_grad_fn`` as a batched :class:`~hhld.landscapes.Landscape`
        (what the ensemble engine runs on)."""
        owner = getattr(self.loss_fn, "__self__", None)
        if isinstance(owner, Landscape) and self.loss_grad_fn == owner.grad:
            return owner
        key = (self.loss_fn, self.loss_grad_fn)
        if self._landscape_cache is None or self._landscape_cache[0] != key:
            self._landscape_cache = (key, NumpyLandscape(self.loss_fn, self.loss_grad_fn, self.dim))
        return self._landscape_cache[1]

    def _point(self, theta, name: str = "theta") -> np.ndarray:
        """One point ``(dim,)`` as a new numpy array, its dtype kept (a torch tensor, also one that
        requires grad, is read as its values)."""
        th = np.array(to_numpy(theta) if is_torch(theta) else theta, copy=True)
        if th.shape != (self.dim,):
            raise ValueError(f"{name} must have shape ({self.dim},), got shape {th.shape}")
        if th.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be a real vector, got dtype {th.dtype}")
        if not np.all(np.isfinite(th)):
            raise ValueError(f"{name} must be finite, got {th.tolist()}")
        return th

    def _grad(self, theta):
        return checked_grad(self.loss_grad_fn(theta), self.loss_grad_fn, self.dim, theta)

    def step(self, theta, t=0.0, dt=0.01):
        """One Euler-Maruyama step ``theta - mu grad L dt + sqrt(2 D dt) xi`` (``t`` is unused,
        as in the documents)."""
        th = self._point(theta)
        return em_step_single(self.rng, th, self._grad(th), dt=check_positive("dt", dt), D=self.D, mu=self.mu)

    def consolidation_ratio(self, theta) -> float:
        """The documents' ``C = ||grad L||^2 / (D d)`` (needs ``D > 0``)."""
        th = self._point(theta)
        return float(consolidation_ratio(self._grad(th), self.D))

    def tunneling_probability(self, theta_current, theta_target) -> float:
        """The documents' ``P = exp(-S_barrier / hbar)`` with the straight-line action
        ``S = sqrt(2 eta max(L(target) - L(current), 0)) * |target - current|``."""
        S = theory.barrier_action_straight(self.loss_fn, self._point(theta_current, "theta_current"),
                                           self._point(theta_target, "theta_target"), self.eta)
        return float(theory.wkb_tunneling_probability(S, self.hbar))

    def apply_tunneling(self, theta):
        """The documents' "controlled random jump" ``theta + 3 hbar u`` (u a random unit vector)."""
        return unit_kick_single(self.rng, self._point(theta), 3.0 * self.hbar)

    # ----------------------------------------------------------------- train
    def train(self, theta_init, n_steps=1000, dt=0.01, transition_threshold=0.5) -> dict:
        """The documents' training loop with phase-transition detection.

        Returns the documents' keys: ``trajectory`` ``(n_steps+1, d)`` (the start, then the
        position after each step, before any kick), ``losses`` and ``consolidations``
        (``(n_steps,)``, after each step, before any kick; ``inf`` at ``D = 0``, where C is
        undefined), ``transitions`` (0-based steps where ``C < transition_threshold`` and
        ``step > 10``, each followed by a kick ``3 hbar u``), ``final_theta`` (after the last
        kick, if any) and ``final_loss`` (= ``losses[-1]``, as ``loss_fn`` returned it).
        """
        n_steps = check_int("n_steps", n_steps, minimum=1)
        dt = check_positive("dt", dt)
        thr = _threshold(transition_threshold)
        th0 = self._point(theta_init, "theta_init")
        say = (lambda step, C: print(_MESSAGE.format(step=step, C=C))) if self.verbose else None
        amplitude = 3.0 * self.hbar
        if self.integrator == "euler_maruyama":
            run = run_single(self.loss_fn, self.loss_grad_fn, th0, n_steps, dt=dt, D=self.D, mu=self.mu,
                             rng=self.rng, threshold=thr, min_step=10, amplitude=amplitude, on_transition=say)
            return {"trajectory": run.trajectory, "losses": run.losses, "consolidations": run.consolidations,
                    "transitions": run.transitions, "final_theta": run.final_theta, "final_loss": run.last_loss}
        return self._train_engine(th0.astype(np.float64), n_steps, dt, thr, say)

    def _train_engine(self, th0, n_steps, dt, threshold, say) -> dict:
        """Other integrators: the ensemble engine with one particle."""
        n_rec = n_steps + 2
        traj = TrajectoryObserver(every=1, max_particles=1, max_len=n_rec)
        loss = LossObserver(every=1, max_len=n_rec)
        observers = [traj, loss]
        cons = policy = None
        if self.D > 0:
            cons = ConsolidationObserver(every=1, max_len=n_rec)
            observers.append(cons)
            if threshold >= 0:  # a negative threshold never fires
                policy = TunnelingPolicy(eta=self.eta, D=self.D, threshold=min(threshold, np.finfo(float).max),
                                         min_step=10)
        sim = Simulation(self.landscape, th0[None, :], dt=dt, D=self.D, mu=self.mu, integrator=self.integrator,
                         rng=self.rng, observers=observers, tunneling=policy)
        sim.run(n_steps, progress=n_steps >= 200_000)
        if say is not None:
            for step, _, C in sim.tunneling_events:
                say(step - 1, C)
        losses = loss.result()["mean"]
        return {
            "trajectory": traj.result()["theta"][:, 0, :],
            "losses": losses,
            "consolidations": cons.result()["mean"] if cons is not None else np.full(len(losses), np.inf),
            "transitions": [step - 1 for step, _, _ in sim.tunneling_events],
            "final_theta": np.asarray(sim.state.theta[0]),
            "final_loss": float(losses[-1]),
        }

    def __repr__(self):
        return (f"HeisenbergLearning(dim={self.dim}, eta={self.eta}, D={self.D}, lam={self.lam}, "
                f"hbar={self.hbar:.4g})")
