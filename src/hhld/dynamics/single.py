"""One particle, NumPy, Euler-Maruyama, with the documents' tunneling rule: a fast path beside
the ensemble driver (:class:`hhld.dynamics.Simulation`), used by the documents' one-particle
API (:class:`hhld.HeisenbergLearning`).

It runs the same dynamics and the same rule as ``Simulation`` with one particle and a
:class:`~hhld.dynamics.TunnelingPolicy`::

    theta <- theta - mu grad L(theta) dt + sqrt(2 D dt) xi          (Euler-Maruyama)
    C      = ||grad L(theta)||^2 / (D d)                              (after the step)
    if C < threshold and step > min_step:  theta <- theta + amplitude * u    (u a random unit vector)

without the ensemble machinery (observers, batched landscapes, per-step dispatch), which for
one particle costs ten times the arithmetic. The user's functions are called on one point
``(d,)``, at the points and in the order of the documents' reference loop, and every random
number is one call ``rng.standard_normal(d)``: the step noise, then (on a kick) the direction.
The arithmetic is the documents' expression in the documents' order,
``(theta + grad * (-mu dt)) + sqrt(2 D dt) * xi`` and ``theta + amplitude * (v / |v|)``, so with
``mu = 1`` and NumPy's global generator the positions are bit for bit those of the documents'
class. ``Simulation`` evaluates the same update in another order (noise first, in place, in
cache-sized chunks), so the two agree to rounding (tested in ``tests/dynamics/test_single.py``).

Checks: the user's functions must return a scalar loss and a gradient of shape ``(d,)``
(an error names the function and the shape it returned); a non-finite loss or gradient raises
:class:`hhld.NonFiniteError` naming the step and the function, never a silent NaN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .._validation import NonFiniteError, check_int, check_nonnegative, check_positive

__all__ = ["SingleRun", "run_single", "em_step_single", "unit_kick_single"]


def _name(fn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _returned_array(value, what: str, expected: str) -> np.ndarray:
    """``np.asarray(value)``, or a ``TypeError`` saying that ``what`` returned ``None`` / a non-array
    instead of ``expected``."""
    if value is None:
        raise TypeError(f"{what} returned None; it must return {expected}")
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - anything that is not array-like
        raise TypeError(f"{what} returned {type(value).__name__}, not {expected}") from exc


def checked_grad(g, grad_fn, dim: int, theta):
    """``g`` (what ``grad_fn(theta)`` returned) as an array of shape ``(dim,)``, or an error
    naming ``grad_fn`` and the expected shape. Arrays of the right shape pass unchanged."""
    if type(g) is np.ndarray and g.shape == (dim,):
        return g
    what = f"loss_grad_fn {_name(grad_fn)!r}"
    arr = _returned_array(g, what, f"the gradient at theta, an array of shape ({dim},)")
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{what} returned {arr.dtype} values ({g!r}); the gradient must be a real array "
                        f"of shape ({dim},)")
    if arr.shape == (dim,):
        return arr
    if dim == 1 and arr.size == 1:  # a scalar derivative of a 1-D loss (broadcasts as in the documents)
        return arr.reshape(1)
    raise ValueError(f"{what} returned an array of shape {arr.shape}; the gradient at theta of shape "
                     f"({dim},) must have shape ({dim},) (theta={np.asarray(theta).tolist()})")


def checked_loss(value, loss_fn, theta):
    """``value`` (what ``loss_fn(theta)`` returned) if it is a real scalar, else an error naming
    ``loss_fn``."""
    t = type(value)
    if t is float or t is np.float64:
        return value
    what = f"loss_fn {_name(loss_fn)!r}"
    arr = _returned_array(value, what, "the loss at theta, a real scalar")
    if arr.ndim != 0:
        raise ValueError(f"{what} returned an array of shape {arr.shape}; the loss at one point theta of shape "
                         f"({np.asarray(theta).size},) must be a scalar (shape ())")
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{what} returned {arr.dtype} ({value!r}); the loss must be a real scalar")
    return value


def em_step_single(rng, theta, grad, *, dt: float, D: float, mu: float = 1.0):
    """One Euler-Maruyama step of one particle in the documents' order:
    ``(theta + grad * (-mu dt)) + sqrt(2 D dt) * rng.standard_normal(d)`` (a new array)."""
    noise = rng.standard_normal(theta.shape[0])
    noise *= math.sqrt(2.0 * D * dt)
    return (theta + grad * (-mu * dt)) + noise


def unit_kick_single(rng, theta, amplitude: float):
    """``theta + amplitude * v/|v|`` with ``v = rng.standard_normal(d)`` (the documents'
    ``apply_tunneling``; a new array)."""
    v = rng.standard_normal(theta.shape[0])
    return theta + amplitude * (v / np.linalg.norm(v))


def _check_grad_finite(g, grad_fn, step: int, theta, when: str) -> None:
    if not math.isfinite(np.add.reduce(g * g)):
        raise NonFiniteError(
            f"loss_grad_fn {_name(grad_fn)!r} returned a non-finite gradient ({g.tolist()}) {when} step {step} "
            f"(theta={theta.tolist()}); reduce dt or check the gradient function",
            step=step, particle=0, quantity="gradient")


@dataclass
class SingleRun:
    """What :func:`run_single` returns: ``trajectory (n_steps+1, d)`` (the start, then the position
    after each step, before its kick, as the documents record it), ``losses (n_steps,)`` and
    ``consolidations (n_steps,)`` (after each step, before its kick; ``inf`` at ``D = 0``; both in the
    dtype ``np.array`` gives the returned values, as in the documents),
    ``transitions`` (0-based steps that kicked), ``final_theta`` (after the last kick) and
    ``last_loss`` (what ``loss_fn`` returned after the last step, unconverted)."""

    trajectory: np.ndarray
    losses: np.ndarray
    consolidations: np.ndarray
    transitions: list
    final_theta: np.ndarray
    last_loss: object


def run_single(loss_fn: Callable, grad_fn: Callable, theta0, n_steps: int, *, dt: float, D: float,
               mu: float = 1.0, rng, threshold: float | None = 0.5, min_step: int = 10,
               amplitude: float = 0.0, on_transition: Callable[[int, float], None] | None = None) -> SingleRun:
    """Run one particle for ``n_steps`` steps (see the module docstring).

    ``loss_fn(theta) -> scalar`` and ``grad_fn(theta) -> (d,)`` take one point ``theta`` of shape
    ``(d,)``. ``rng``: anything with ``standard_normal(d)`` (a numpy ``Generator``, a
    ``RandomState``, or :data:`hhld.documents_api.GLOBAL_NUMPY_RNG`). Kicks: when ``C < threshold``
    and ``step > min_step`` (``threshold=None``: never; any real threshold, a negative one never
    fires), by ``amplitude`` along a random unit direction; ``on_transition(step, C)`` is called
    just before each kick. ``theta0`` is copied; its dtype is kept until the arithmetic promotes it.
    """
    n_steps = check_int("n_steps", n_steps, minimum=1)
    dt = check_positive("dt", dt)
    D = check_nonnegative("D", D)
    mu = check_positive("mu", mu)
    min_step = check_int("min_step", min_step)
    theta = np.array(theta0, copy=True)
    if theta.ndim != 1 or theta.dtype.kind not in "fiu":
        raise ValueError(f"theta0 must be a real vector of shape (d,), got shape {theta.shape} dtype {theta.dtype}")
    d = theta.shape[0]
    shape = (d,)
    drift = -mu * dt
    sigma = math.sqrt(2.0 * D * dt)
    dd = D * d
    kicks = threshold is not None and D > 0 and not (threshold <= -math.inf)
    thr = threshold if kicks else 0.0
    traj = np.empty((n_steps + 1, d), dtype=np.result_type(theta.dtype, np.float64))
    losses: list = []  # the values as the functions return them; one np.array at the end, as the documents
    cons: list = []
    traj[0] = theta
    transitions: list[int] = []
    standard_normal = rng.standard_normal
    norm = np.linalg.norm
    add_reduce = np.add.reduce
    isfinite = math.isfinite
    loss = None
    fresh = True  # the gradient at the start of the step is at a point not checked yet (start, kick)
    for step in range(n_steps):
        g = grad_fn(theta)  # the documents evaluate the gradient at the start of every step
        if type(g) is not np.ndarray or g.shape != shape:
            g = checked_grad(g, grad_fn, d, theta)
        if fresh:
            _check_grad_finite(g, grad_fn, step, theta, "before")
            fresh = False
        noise = standard_normal(d)
        noise *= sigma
        theta = (theta + g * drift) + noise
        loss = loss_fn(theta)
        t = type(loss)
        if t is not np.float64 and t is not float:
            loss = checked_loss(loss, loss_fn, theta)
        if not isfinite(loss):
            raise NonFiniteError(
                f"loss_fn {_name(loss_fn)!r} returned {float(loss)!r} at step {step} (theta={theta.tolist()}); "
                "reduce dt (stability needs dt < 2/(mu * max curvature)) or check the loss function",
                step=step, particle=0, quantity="loss")
        g = grad_fn(theta)
        if type(g) is not np.ndarray or g.shape != shape:
            g = checked_grad(g, grad_fn, d, theta)
        sq = add_reduce(g * g)
        if not isfinite(sq):
            _check_grad_finite(g, grad_fn, step, theta, "after")
        C = sq / dd if D > 0 else math.inf
        traj[step + 1] = theta
        losses.append(loss)
        cons.append(C)
        if kicks and C < thr and step > min_step:
            if on_transition is not None:
                on_transition(step, C)
            v = standard_normal(d)
            theta = theta + amplitude * (v / norm(v))
            transitions.append(step)
            fresh = True
    if not np.isfinite(traj).all():  # a function that stays finite where theta is not
        bad = int(np.flatnonzero(~np.isfinite(traj).all(axis=1))[0])
        raise NonFiniteError(f"theta became non-finite at step {bad - 1} ({traj[bad].tolist()}); reduce dt",
                             step=bad - 1, particle=0, quantity="theta")
    return SingleRun(trajectory=traj, losses=np.array(losses), consolidations=np.array(cons),
                     transitions=transitions, final_theta=theta, last_loss=loss)
