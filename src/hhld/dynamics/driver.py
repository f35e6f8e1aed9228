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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._backend import count_below_spacing, default_rng, is_torch, to_numpy
from .._validation import NonFiniteError, check_choice, check_int, check_nonnegative, check_positive
from ..landscapes import check_landscape
from . import checkpoint as _ckpt
from .entropy_force import EntropyCoupling
from .integrators import get_integrator
from .kernels import find_kernel
from .observers import Observer
from .kicks import TunnelingPolicy, kick

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
        return {"kind": "torch", "state": rng.get_state().numpy().copy(), "device": str(rng.device)}
    return {"kind": "numpy", "bit_generator": type(rng.bit_generator).__name__, "state": rng.bit_generator.state}


def _restore_rng(saved):
    if saved["kind"] == "torch":
        import torch

        g = torch.Generator(device=saved.get("device", "cpu"))
        g.set_state(torch.from_numpy(np.asarray(saved["state"], dtype=np.uint8).copy()))
        return g
    bg = getattr(np.random, saved["bit_generator"])()
    bg.state = saved["state"]
    return np.random.Generator(bg)


def _child_rng(rng) -> np.random.Generator:
    """An independent numpy generator derived from the run's ``rng`` (numpy or torch), for the
    entropy coupling's subsampling: the same seed gives the same run. A numpy generator's seed
    sequence is spawned (its stream is not advanced); a torch generator gives its seed."""
    if is_torch(rng):
        return np.random.default_rng([int(rng.initial_seed()), 0x5EED])
    seq = getattr(rng.bit_generator, "seed_seq", None)
    if isinstance(seq, np.random.SeedSequence):
        return np.random.default_rng(seq.spawn(1)[0])
    return np.random.default_rng(int(rng.integers(2 ** 63)))


_OBSERVER_METHODS = ("start", "due", "observe", "select", "result", "state_dict", "load_state_dict")


def _check_observers(observers) -> list:
    out = list(observers)
    for i, obs in enumerate(out):
        missing = [m for m in _OBSERVER_METHODS if not callable(getattr(obs, m, None))]
        if missing or not isinstance(getattr(obs, "name", None), str):
            what = f"observers[{i}] = {obs!r} (a {type(obs).__name__})"
            raise TypeError(f"{what} is not an observer: it lacks {missing or ['a str name']}; subclass "
                            f"hhld.dynamics.Observer (implement observe and result) or use a built-in one "
                            f"such as LossObserver")
    names = [obs.name for obs in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"observers must have distinct names (results are keyed by name), got {names}")
    return out


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
    kernels : use a fused kernel (:mod:`hhld.dynamics.kernels`) when the landscape declares its
        gradient form and the ensemble is large enough (default True; the numbers are the
        reference step's, see :attr:`kernel`); False always runs the reference step.

    Attributes
    ----------
    kernel : the fused kernel in use (None: the reference step ``info.step``).
    """

    def __init__(self, landscape, theta0, *, dt: float, D: float, mu: float = 1.0,
                 integrator: str = "euler_maruyama", rng=None, observers: Sequence[Observer] = (),
                 tunneling: TunnelingPolicy | None = None, eta: float = 1.0, friction: float = 1.0,
                 lam: float = 0.0, on_nonfinite: str = "raise", check_every: int = 1, kernels: bool = True):
        self.landscape = check_landscape(landscape)
        self.dt = check_positive("dt", dt)
        self.D = check_nonnegative("D", D)
        self.mu = check_positive("mu", mu)
        self.info = get_integrator(integrator)
        self.eta = check_positive("eta", eta)
        self.friction = check_nonnegative("friction", friction)
        self.lam = check_nonnegative("lam", lam)
        self.on_nonfinite = check_choice("on_nonfinite", on_nonfinite, ("raise", "drop"))
        self.check_every = check_int("check_every", check_every, minimum=1)
        self.observers = _check_observers(observers)
        if tunneling is not None and not isinstance(tunneling, TunnelingPolicy):
            raise TypeError(f"tunneling must be a hhld.dynamics.TunnelingPolicy or None, got {tunneling!r}")
        self.tunneling = tunneling
        if is_torch(theta0):
            if rng is None:
                from .._backend import torch_generator

                rng = torch_generator(None, device=str(theta0.device))
        else:
            rng = default_rng(rng)
        self.rng = rng
        # built from the run's generator: the same seed gives the same run
        self.extra_force = EntropyCoupling(self.lam, rng=_child_rng(rng)) if self.lam > 0 else None
        if self.lam > 0 and not self.info.accepts_extra_force:
            raise ValueError(f"the entropy coupling lam > 0 acts through an external force, which "
                             f"{self.info.name} does not take: use integrator='baoab'")
        if self.extra_force is not None:  # lam > 0 needs an ensemble with spread (not every particle at one point)
            self.extra_force.check_ensemble(theta0, "theta0")
        self.state = self.info.init(landscape, theta0, rng=rng, D=self.D, mu=self.mu, **self._extra_params())
        self.kernel = (find_kernel(self.info, self.landscape, self.state.theta, self._extra_params())
                       if kernels else None)
        n = self.state.theta.shape[0]
        if n == 0:
            raise ValueError(f"theta0 holds no particle (shape {tuple(self.state.theta.shape)}); give at least one "
                             "point, shape (N, d) with N >= 1")
        self.n_particles = int(n)
        self.particle_ids = np.arange(n)
        self.dropped: list[tuple[int, int, str]] = []  # (step, original particle id, what)
        self.tunneling_events: list[tuple[int, int, float]] = []  # (step, particle id, C)
        self.ctx = RunContext(landscape, self.dt, self.D, self.mu, self.info.name)
        self._started = False
        self._check_finite(self.state, where="initial state")
        self._check_resolution()

    def _check_resolution(self):
        """One warning when the positions' dtype cannot represent the overdamped step at their magnitudes: the
        noise ``sqrt(2 D dt)`` below a fifth of the spacing of most entries (it rounds back for nearly every draw)
        and the drift ``mu dt |grad L|`` below half of it (it always does): ``theta + step`` is then ``theta``
        there, and the ensemble does not move where the dynamics says it does (float16 / bfloat16 positions, or a
        tiny ``dt``)."""
        if self.info.kind != "overdamped":
            return
        th, g = self.state.theta, self.state.grad
        sigma = math.sqrt(2.0 * self.D * self.dt)
        if count_below_spacing(abs(th).max(), sigma, 0.2)[0] == 0:
            return  # the noise survives even at the largest position (the spacing grows with |theta|): the rule
        lost_noise, nz = count_below_spacing(th, sigma, 0.2)
        if not nz or lost_noise * 2 <= nz:
            return
        drift = abs(g) * (self.mu * self.dt)
        lost_drift, _ = count_below_spacing(th, drift, 0.5)
        if lost_drift * 2 <= nz:
            return
        warnings.warn(f"the positions' dtype ({th.dtype}) cannot represent this step at their magnitudes: the noise "
                      f"sqrt(2 D dt) = {sigma:.3g} is below a fifth of the spacing between representable values for "
                      f"{lost_noise} of {nz} nonzero entries, and the drift mu dt |grad L| below half of it for "
                      f"{lost_drift}: theta + step rounds back to theta there, so the ensemble does not move as the "
                      "dynamics says. Use float32 or float64 positions, or a larger dt", RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ run
    def _extra_params(self) -> dict:
        """The integrator's own parameters (declared in ``info.params``)."""
        own = dict(eta=self.eta, friction=self.friction, extra_force=self.extra_force)
        return {k: own[k] for k in self.info.params}

    def _params(self):
        return dict(dt=self.dt, D=self.D, mu=self.mu, **self._extra_params())

    def run(self, n_steps: int, *, progress: bool = False, description: str = "Langevin") -> "Simulation":
        """Advance ``n_steps`` steps (can be called repeatedly; continues the same run)."""
        n_steps = check_int("n_steps", n_steps, minimum=0)
        if not self._started:
            for obs in self.observers:
                obs.start(self.state, self.ctx)
            self._started = True
        step_fn = self.kernel or self.info.step
        params = self._params()
        bar = _progress(progress, n_steps, description)
        update_every = max(1, n_steps // 200)
        try:
            i = 0
            while i < n_steps:
                if self.kernel is not None and self.tunneling is None:
                    # a fused kernel takes every step up to the next one anything looks at (an
                    # observer due, a progress update) in one call; the states between are not made
                    stretch = self._stretch(n_steps - i, update_every - i % update_every if bar else n_steps)
                    before = self.state.step
                    self.state, info = self.kernel.advance(self.rng, self.state, self.landscape, stretch, **params)
                    i += self.state.step - before
                else:
                    # numpy's overflow / invalid-value warnings would only repeat, without the step or the particle,
                    # what the finiteness check below reports (NonFiniteError, or the dropped particles)
                    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                        self.state, info = step_fn(self.rng, self.state, self.landscape, **params)
                    i += 1
                step = self.state.step
                if step % self.check_every == 0 and info.finite is not True:  # True: checked by the step
                    self._check_finite(self.state)
                for obs in self.observers:
                    if obs.due(step):
                        obs.observe(self.state, self.ctx)
                if self.tunneling is not None:
                    self._apply_tunneling()
                if bar is not None and i % update_every == 0:
                    bar[0].update(bar[1], advance=update_every)
        finally:
            if bar is not None:
                bar[0].stop()
        return self

    def _stretch(self, left: int, limit: int) -> int:
        """Steps until (and including) the next one an observer is due at, at most ``min(left,
        limit)``."""
        n, step = min(left, limit), self.state.step
        if self.observers:
            for k in range(1, n + 1):
                if any(obs.due(step + k) for obs in self.observers):
                    return k
        return n

    def _apply_tunneling(self):
        st = self.state
        # the documents' guard "step > 10" refers to the 0-based loop index = step - 1
        mask, C = self.tunneling.detect(st.grad, st.step - 1)
        if not mask.any():
            return
        for i in np.flatnonzero(mask):
            self.tunneling_events.append((int(st.step), int(self.particle_ids[i]), float(C[i])))
        theta = kick(self.rng, st.theta, mask, self.tunneling.amplitude)
        self.state = self.info.at_positions(st, theta, self.landscape, **self._extra_params())

    def _check_finite(self, state, where: str | None = None):
        theta = state.theta
        if math.isfinite(_fast_sum(theta)):  # one serial pass; NaN/Inf propagate into the sum
            return
        bad_rows = ~np.isfinite(to_numpy(theta)).all(axis=1)
        if not bad_rows.any():  # the sum overflowed but all entries are finite
            return
        first = int(np.flatnonzero(bad_rows)[0])
        pid = int(self.particle_ids[first])
        g = state.grad
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
    def config(self) -> dict:
        """What a checkpoint must match to be loaded into this simulation (see :meth:`load`)."""
        th = self.state.theta
        return {
            "backend": "torch" if is_torch(th) else "numpy",
            "dtype": str(th.dtype).replace("torch.", ""),
            "state_type": type(self.state).__name__,
            "dim": int(th.shape[1]),
            "n_particles": self.n_particles,
            "landscape": f"{getattr(self.landscape, 'name', type(self.landscape).__name__)}/{self.landscape.dim}",
            "integrator": self.info.name,
            "dt": self.dt, "D": self.D, "mu": self.mu, "eta": self.eta, "friction": self.friction, "lam": self.lam,
            "observers": [obs.name for obs in self.observers],
            "tunneling": None if self.tunneling is None else repr(self.tunneling),
        }

    #: configuration entries that can never differ (the state could not be used at all)
    _STRUCTURAL = ("backend", "dtype", "state_type", "dim", "observers")

    def save(self, path) -> Path:
        """Write a checkpoint (state, random-generator state, observers, events, configuration) as
        a data-only file (``.npz`` archive with a JSON document: :mod:`hhld.dynamics.checkpoint`;
        no pickle, so loading it cannot run code)."""
        payload = {
            "config": self.config(),
            "state": {k: (to_numpy(v).copy() if hasattr(v, "shape") else v) for k, v in self.state._asdict().items()},
            "rng": _rng_state(self.rng),
            "observers": [obs.state_dict() for obs in self.observers],
            "particle_ids": np.asarray(self.particle_ids),
            "dropped": [list(e) for e in self.dropped],
            "tunneling_events": [list(e) for e in self.tunneling_events],
            "started": self._started,
            "extra_force_rng": (_rng_state(self.extra_force.rng) if self.extra_force is not None else None),
        }
        return _ckpt.write(path, payload)

    def load(self, path, *, allow_config_change: bool = False) -> "Simulation":
        """Restore a checkpoint written by :meth:`save` into this simulation; the run then
        continues exactly as if never interrupted.

        The checkpoint must come from a simulation of the same configuration (:meth:`config`:
        landscape, integrator, dt, D, mu, eta, friction, lam, particle count, ...); a different one
        raises ``ValueError`` naming the differences. ``allow_config_change=True`` loads it anyway
        and continues the saved ensemble under *this* simulation's parameters (e.g. another dt or D);
        the backend, dtype, state type, dimension and observers must match in any case."""
        payload = _ckpt.read(path)
        saved, mine = payload["config"], self.config()
        diff = [k for k in mine if saved.get(k) != mine[k]]
        hard = [k for k in diff if k in self._STRUCTURAL]
        if hard or (diff and not allow_config_change):
            desc = ", ".join(f"{k}: checkpoint {saved.get(k)!r}, this simulation {mine[k]!r}" for k in diff)
            hint = ("these cannot differ" if hard else
                    "pass allow_config_change=True to continue the saved ensemble under this simulation's parameters")
            raise ValueError(f"the checkpoint {path} was written by a differently configured simulation ({desc}); "
                             f"{hint}")
        expected = set(type(self.state)._fields)
        if set(payload["state"]) != expected:
            raise ValueError(f"the checkpoint {path} holds a {saved.get('state_type')} with fields "
                             f"{sorted(payload['state'])}, this version's has {sorted(expected)} (written by another "
                             f"hhld version); it cannot be loaded")
        fields = {}
        for k, v in payload["state"].items():
            if isinstance(v, np.ndarray) and mine["backend"] == "torch":
                import torch

                fields[k] = torch.as_tensor(v, device=self.state.theta.device)
            else:
                fields[k] = v
        self.state = type(self.state)(**fields)
        self.rng = _restore_rng(payload["rng"])
        for obs, st in zip(self.observers, payload["observers"]):
            obs.load_state_dict(st)
        self.particle_ids = np.asarray(payload["particle_ids"])
        self.dropped = [tuple(e) for e in payload["dropped"]]
        self.tunneling_events = [tuple(e) for e in payload["tunneling_events"]]
        self._started = payload["started"]
        if self.extra_force is not None and payload["extra_force_rng"] is not None:
            self.extra_force.rng = _restore_rng(payload["extra_force_rng"])
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
