"""The run loop: integrate an ensemble, call observers on their schedules, apply the
documents' tunneling rule, stop (or drop particles) on non-finite values, checkpoint and
resume with nothing lost.

>>> import numpy as np, hhld
>>> from hhld.dynamics import Simulation, LossObserver
>>> sim = Simulation(hhld.landscapes.double_well_2d(), np.zeros((1000, 2)), dt=0.01, D=0.05,
...                  rng=np.random.default_rng(0), observers=[LossObserver(every=10)])
>>> _ = sim.run(500)
>>> sim.state.theta.shape
(1000, 2)
"""
from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._backend import default_rng, is_torch, to_numpy
from .._validation import NonFiniteError, check_choice, check_int, check_nonnegative, check_positive
from .entropy_force import EntropyCoupling
from .integrators import OverdampedState, UnderdampedState, get_integrator, known_finite
from .observers import Observer
from .tunneling import TunnelingPolicy, kick

__all__ = ["RunContext", "Simulation", "simulate"]


@dataclass(frozen=True)
class RunContext:
    """What observers may read besides the state."""

    landscape: Any
    dt: float
    D: float
    mu: float
    integrator: str


_NUMPY_SUMMABLE = ("torch.float32", "torch.float64", "torch.float16")


def _fast_sum(x) -> float:
    """``float(x.sum())``; CPU torch tensors are summed through their (zero-copy) numpy
    view: one serial vectorised pass, without waking torch's intra-op thread pool for a
    reduction (which on a small shared machine can cost more than the step itself)."""
    if is_torch(x):
        if x.device.type != "cpu" or x.requires_grad or str(x.dtype) not in _NUMPY_SUMMABLE:
            return float(x.sum())
        x = x.numpy()
    if x.dtype.kind == "f" and x.ndim == 2:
        return float(np.einsum("ij->", x))  # a plain SIMD loop: about 3x np.sum's pairwise
    return float(np.sum(x))


def _select_state(state, keep):
    """The state restricted to particles ``keep`` (boolean numpy mask)."""
    fields = {}
    for name, value in state._asdict().items():
        if value is not None and hasattr(value, "shape") and len(getattr(value, "shape", ())) == 2:
            if is_torch(value):
                import torch

                fields[name] = value[torch.as_tensor(keep, device=value.device)]
            else:
                fields[name] = value[keep]
        else:
            fields[name] = value
    return type(state)(**fields)


def _rng_state(rng):
    if is_torch(rng):
        return ("torch", rng.get_state())
    return ("numpy", rng.bit_generator.state)


def _restore_rng(kind_state):
    kind, st = kind_state
    if kind == "torch":
        import torch

        g = torch.Generator()
        g.set_state(st)
        return g
    rng = np.random.default_rng()
    rng.bit_generator.state = st
    return rng


class Simulation:
    """An ensemble of N particles under (overdamped or underdamped) Langevin dynamics.

    Parameters
    ----------
    landscape : hhld.landscapes.Landscape
    theta0 : (N, d) or (d,) array / tensor -- initial positions (copied). The backend
        (numpy or torch) and dtype of ``theta0`` are kept.
    dt, D, mu : step size (> 0), diffusion (>= 0), mobility (> 0; 1 = reference code,
        1/eta = the documents' master equation).
    integrator : ``"euler_maruyama"`` | ``"leimkuhler_matthews"`` | ``"baoab"``.
    rng : numpy ``Generator`` (numpy theta) or ``torch.Generator`` (torch theta);
        ``None`` = ``np.random.default_rng(None)`` (numpy) / a fresh torch generator.
    observers : observers called after steps on their schedules.
    tunneling : a :class:`TunnelingPolicy` (the documents' kicks) or None.
    eta, friction, lam : underdamped (``baoab``) parameters: mass eta, friction rate, and
        the entropy coupling lam of ``H = pi^2/2eta + L + (lam/2) S^2`` (0 = off).
    on_nonfinite : ``"raise"`` (default: :class:`hhld.NonFiniteError` naming the step and
        particle) or ``"drop"`` (remove the particle, record it in ``dropped``, go on).
    check_every : non-finite check interval in steps (NaN/Inf persist, so a check every k
        steps still names the particle; the step is then known to within k).
    """

    def __init__(self, landscape, theta0, *, dt: float, D: float, mu: float = 1.0,
                 integrator: str = "euler_maruyama", rng=None, observers: Sequence[Observer] = (),
                 tunneling: TunnelingPolicy | None = None, eta: float = 1.0, friction: float = 1.0,
                 lam: float = 0.0, on_nonfinite: str = "raise", check_every: int = 1):
        self.landscape = landscape
        self.dt = check_positive("dt", dt)
        self.D = check_nonnegative("D", D)
        self.mu = check_positive("mu", mu)
        self.info = get_integrator(integrator)
        self.eta = check_positive("eta", eta)
        self.friction = check_nonnegative("friction", friction)
        self.lam = check_nonnegative("lam", lam)
        self.on_nonfinite = check_choice("on_nonfinite", on_nonfinite, ("raise", "drop"))
        self.check_every = check_int("check_every", check_every, minimum=1)
        self.observers = list(observers)
        self.tunneling = tunneling
        if is_torch(theta0):
            if rng is None:
                from .._backend import torch_generator

                rng = torch_generator(None, device=str(theta0.device))
        else:
            rng = default_rng(rng)
        self.rng = rng
        self.extra_force = EntropyCoupling(self.lam) if self.lam > 0 else None
        if self.lam > 0 and self.info.kind != "underdamped":
            raise ValueError("the entropy coupling lam > 0 acts through the Hamiltonian form: use integrator='baoab'")
        if self.info.kind == "overdamped":
            self.state = self.info.init(landscape, theta0, integrator=self.info.name)
        else:
            self.state = self.info.init(landscape, theta0, rng=rng, eta=self.eta, D=self.D, mu=self.mu,
                                        extra_force=self.extra_force)
        n = self.state.theta.shape[0]
        self.particle_ids = np.arange(n)
        self.dropped: list[tuple[int, int, str]] = []  # (step, original particle id, what)
        self.tunneling_events: list[tuple[int, int, float]] = []  # (step, particle id, C)
        self.ctx = RunContext(landscape, self.dt, self.D, self.mu, self.info.name)
        self._started = False
        self._check_finite(self.state, where="initial state")

    # ------------------------------------------------------------------ run
    def _params(self):
        p = dict(dt=self.dt, D=self.D, mu=self.mu)
        if self.info.kind == "underdamped":
            p.update(eta=self.eta, friction=self.friction, extra_force=self.extra_force)
        return p

    def run(self, n_steps: int, *, progress: bool = False, description: str = "Langevin") -> "Simulation":
        """Advance ``n_steps`` steps (can be called repeatedly; continues the same run)."""
        n_steps = check_int("n_steps", n_steps, minimum=0)
        if not self._started:
            for obs in self.observers:
                obs.start(self.state, self.ctx)
            self._started = True
        step_fn = self.info.step
        params = self._params()
        bar = _progress(progress, n_steps, description)
        update_every = max(1, n_steps // 200)
        try:
            for i in range(n_steps):
                self.state = step_fn(self.rng, self.state, self.landscape, **params)
                step = self.state.step
                if step % self.check_every == 0:
                    self._check_finite(self.state)
                for obs in self.observers:
                    if obs.due(step):
                        obs.observe(self.state, self.ctx)
                if self.tunneling is not None:
                    self._apply_tunneling()
                if bar is not None and (i + 1) % update_every == 0:
                    bar[0].update(bar[1], advance=update_every)
        finally:
            if bar is not None:
                bar[0].stop()
        return self

    def _apply_tunneling(self):
        st = self.state
        grad = st.grad if isinstance(st, OverdampedState) else -st.force
        # the documents' guard "step > 10" refers to the 0-based loop index = step - 1
        mask, C = self.tunneling.detect(grad, st.step - 1)
        if not mask.any():
            return
        for i in np.flatnonzero(mask):
            self.tunneling_events.append((int(st.step), int(self.particle_ids[i]), float(C[i])))
        theta = kick(self.rng, st.theta, mask, self.tunneling.amplitude)
        if isinstance(st, OverdampedState):
            self.state = st._replace(theta=theta, grad=self.landscape.grad(theta))
        else:
            f = -self.landscape.grad(theta)
            if self.extra_force is not None:
                f = f + self.extra_force(theta)
            self.state = st._replace(theta=theta, force=f)

    def _check_finite(self, state, where: str | None = None):
        theta = state.theta
        if known_finite(theta):  # the fused step kernel already checked every entry
            return
        if math.isfinite(_fast_sum(theta)):  # one serial pass; NaN/Inf propagate into the sum
            return
        bad_rows = ~np.isfinite(to_numpy(theta)).all(axis=1)
        if not bad_rows.any():  # the sum overflowed but all entries are finite
            return
        first = int(np.flatnonzero(bad_rows)[0])
        pid = int(self.particle_ids[first])
        g = state.grad if isinstance(state, OverdampedState) else state.force
        grad_bad = not np.isfinite(to_numpy(g)[first]).all() if g is not None else False
        step = state.step
        window = f"step {step}" if self.check_every == 1 else f"steps {max(step - self.check_every + 1, 0)}..{step}"
        at = where or window
        msg = (f"non-finite value at {at} in particle {pid} "
               f"(theta={to_numpy(theta)[first].tolist()}; gradient {'non-finite' if grad_bad else 'finite'}); "
               f"{int(bad_rows.sum())} particle(s) affected. Reduce dt (stability needs dt < 2/(mu * max curvature)) "
               "or pass on_nonfinite='drop' to remove such particles and continue.")
        if self.on_nonfinite == "raise" or where is not None:
            raise NonFiniteError(msg, step=step, particle=pid, quantity="theta")
        keep = ~bad_rows
        for i in np.flatnonzero(bad_rows):
            self.dropped.append((int(step), int(self.particle_ids[i]), "non-finite theta"))
        if not keep.any():
            raise NonFiniteError("every particle became non-finite; " + msg, step=step, particle=pid, quantity="theta")
        self.state = _select_state(state, keep)
        self.particle_ids = self.particle_ids[keep]
        for obs in self.observers:
            obs.select(keep)

    # ------------------------------------------------------------- results
    def results(self) -> dict:
        """Every observer's result by name, plus run metadata."""
        out: dict[str, Any] = {obs.name: obs.result() for obs in self.observers}
        out["final_theta"] = to_numpy(self.state.theta)
        out["step"] = self.state.step
        out["time"] = self.state.time
        out["tunneling_events"] = list(self.tunneling_events)
        out["dropped"] = list(self.dropped)
        return out

    # ------------------------------------------------------- checkpointing
    def save(self, path) -> Path:
        """Write a checkpoint (state, random-generator state, observers, events)."""
        path = Path(path)
        payload = {
            "state_type": type(self.state).__name__,
            "state": {k: (to_numpy(v).copy() if hasattr(v, "shape") else v) for k, v in self.state._asdict().items()},
            "torch": is_torch(self.state.theta),
            "dtype": str(self.state.theta.dtype),
            "rng": _rng_state(self.rng),
            "observers": [obs.state_dict() for obs in self.observers],
            "particle_ids": self.particle_ids,
            "dropped": self.dropped,
            "tunneling_events": self.tunneling_events,
            "started": self._started,
            "extra_force_rng": self.extra_force.rng.bit_generator.state if self.extra_force is not None else None,
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(payload, fh)
        tmp.replace(path)
        return path

    def load(self, path) -> "Simulation":
        """Restore a checkpoint written by :meth:`save` into this (identically configured)
        simulation; the run then continues exactly as if never interrupted."""
        with open(path, "rb") as fh:
            payload = pickle.load(fh)
        if payload["state_type"] != type(self.state).__name__:
            raise ValueError(f"checkpoint holds a {payload['state_type']}, this simulation a {type(self.state).__name__}")
        fields = {}
        for k, v in payload["state"].items():
            if isinstance(v, np.ndarray) and payload["torch"]:
                import torch

                ref = self.state.theta
                fields[k] = torch.as_tensor(v, device=ref.device)
            else:
                fields[k] = v
        self.state = type(self.state)(**fields)
        self.rng = _restore_rng(payload["rng"])
        for obs, st in zip(self.observers, payload["observers"]):
            obs.load_state_dict(st)
        self.particle_ids = payload["particle_ids"]
        self.dropped = payload["dropped"]
        self.tunneling_events = payload["tunneling_events"]
        self._started = payload["started"]
        if self.extra_force is not None and payload["extra_force_rng"] is not None:
            self.extra_force.rng.bit_generator.state = payload["extra_force_rng"]
        return self


def simulate(landscape, theta0, n_steps: int, **kwargs) -> dict:
    """Convenience: build a :class:`Simulation`, run ``n_steps``, return its results."""
    progress = kwargs.pop("progress", False)
    sim = Simulation(landscape, theta0, **kwargs)
    sim.run(n_steps, progress=progress)
    return sim.results()


def _progress(enabled: bool, total: int, description: str):
    if not enabled or total <= 0:
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeRemainingColumn(), transient=True)
    prog.start()
    task = prog.add_task(description, total=total)
    return prog, task
