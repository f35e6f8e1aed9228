"""``HeisenbergSGD``: SGD with Langevin noise, tunneling kicks and the documents' controller.

The update of one parameter group, per step (``g`` the gradient the optimizer sees)::

    d      = g + weight_decay * p                      (standard SGD)
    b      = momentum * b + (1 - dampening) * d        (standard SGD momentum)
    p     <- p - lr * b                                (standard SGD)
    p     <- p + sqrt(2 * D_inject * lr) * xi          (Langevin noise, xi ~ N(0, 1))
    p     <- p + kick_factor * hbar * u   if C < kick_threshold   (tunneling kick)

* The noise term is the Euler-Maruyama discretisation of ``sqrt(2 D) dW`` over a time step
  ``dt = lr`` (standard Langevin dynamics / SGLD, with the reference code's unit mobility).
  It is added to the parameters directly, never through the momentum buffer.
* The kick is the documents' ``apply_tunneling``: ``theta += 3 * sqrt(eta * D) * u`` with ``u``
  a random unit vector over **all** parameters of the group (one direction, not one per
  tensor), ``hbar = sqrt(eta * D)`` (``hhld.theory.hbar``), ``eta`` the documents' "learning
  inertia" which they define as ``1 / learning_rate``; ``eta=None`` means ``1 / lr`` at the
  step (so the kick grows when the controller lowers lr, and shrinks when it raises it).
* ``C`` is the documents' consolidation ratio ``||g||^2 / (D * d)``
  (:func:`hhld.observables.consolidation_ratio`) computed from the raw gradients of the group
  (before weight decay / momentum), ``d`` their number of elements, ``D`` the group's ``D``
  (the diffusion the documents put in ``C`` and ``hbar``; ``None`` means ``D_inject``). A
  monitor that measures SGD's own diffusion can pass ``C`` (and ``D``) instead:
  ``optimizer.step(consolidation=C, diffusion=D)``. When neither a ``D`` nor a ``C`` is
  available, no kick happens.
* The **controller** (``controller=True`` or a :class:`ControllerConfig`) is the documents'
  "Practical Algorithm" (section 13): ``C < kick_threshold``: kick; ``C > explore_threshold``:
  ``lr *= lr_factor`` and ``D_inject *= noise_factor``; bounded by ``max_lr`` / ``max_D_inject``,
  after a warm-up and with a cool-down between actions. Without the controller a kick happens
  whenever ``C < kick_threshold`` (the documents' ``train`` loop, which kicks at every such
  step after step 10; ``kick_cooldown`` spaces them).

Every kick and every controller action is appended to ``optimizer.events`` (a list of dicts).
``state_dict()`` also carries the noise generator's state, the step counter and the events, so
that ``load_state_dict`` resumes a run bit-identically on CPU.

The maths lives in the functional kernel :func:`heisenberg_sgd` (a per-tensor loop path and a
``torch._foreach_*`` multi-tensor path giving the same numbers).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

from .._backend import count_below_spacing
from .._validation import NonFiniteError, check_int, check_nonnegative, check_positive, check_real
from ..observables import consolidation_ratio
from ..theory import hbar as _hbar_formula

__all__ = ["HeisenbergSGD", "ControllerConfig", "heisenberg_sgd"]


# --------------------------------------------------------------------------- kernel
def heisenberg_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    D_inject: float = 0.0,
    noise: list[Tensor] | None = None,
    kick: list[Tensor] | None = None,
    foreach: bool | None = None,
) -> None:
    """Functional HeisenbergSGD update, in place on ``params`` (and ``momentum_buffers``).

    ``noise`` is a list of standard-normal tensors ``xi`` (one per parameter, same shapes), the
    added noise is ``sqrt(2 * D_inject * lr) * xi``; it is required when ``D_inject > 0``.
    ``kick`` is a list of displacements added as they are (already scaled), or ``None``.
    ``momentum_buffers`` entries that are ``None`` are created (a copy of the first update
    direction, as torch.optim.SGD does) and written back into the list.
    ``foreach=None`` uses the multi-tensor path when every tensor is on CUDA.
    """
    if not (len(params) == len(grads) == len(momentum_buffers)):
        raise ValueError(
            f"params, grads and momentum_buffers must have the same length, got "
            f"{len(params)}, {len(grads)}, {len(momentum_buffers)}"
        )
    if D_inject > 0:
        if noise is None or len(noise) != len(params):
            raise ValueError("D_inject > 0 needs one noise tensor per parameter (noise=[xi, ...])")
    if kick is not None and len(kick) != len(params):
        raise ValueError(f"kick must have one tensor per parameter, got {len(kick)} for {len(params)}")
    if foreach is None:
        foreach = len(params) > 0 and all(p.is_cuda for p in params)
    fn = _multi_tensor if foreach else _single_tensor
    fn(params, grads, momentum_buffers, lr=float(lr), weight_decay=float(weight_decay),
       momentum=float(momentum), dampening=float(dampening), nesterov=bool(nesterov),
       maximize=bool(maximize), noise_std=math.sqrt(2.0 * float(D_inject) * float(lr)),
       noise=noise if D_inject > 0 else None, kick=kick)


def _single_tensor(params, grads, bufs, *, lr, weight_decay, momentum, dampening, nesterov, maximize,
                   noise_std, noise, kick):
    for i, p in enumerate(params):
        d = grads[i] if not maximize else -grads[i]
        if weight_decay != 0:
            d = d.add(p, alpha=weight_decay)
        if momentum != 0:
            buf = bufs[i]
            if buf is None:
                buf = torch.clone(d).detach()
                bufs[i] = buf
            else:
                buf.mul_(momentum).add_(d, alpha=1 - dampening)
            d = d.add(buf, alpha=momentum) if nesterov else buf
        p.add_(d, alpha=-lr)
        if noise is not None:
            p.add_(noise[i], alpha=noise_std)
        if kick is not None:
            p.add_(kick[i])


def _multi_tensor(params, grads, bufs, *, lr, weight_decay, momentum, dampening, nesterov, maximize,
                  noise_std, noise, kick):
    if not params:
        return
    # group by (device, dtype) so that every foreach call sees homogeneous lists
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault((p.device, p.dtype), []).append(i)
    for idx in groups.values():
        ps = [params[i] for i in idx]
        ds = [grads[i] for i in idx]
        if maximize:
            ds = torch._foreach_neg(ds)
        if weight_decay != 0:
            ds = torch._foreach_add(ds, ps, alpha=weight_decay)
        if momentum != 0:
            bs = [bufs[i] for i in idx]
            if all(b is not None for b in bs):
                torch._foreach_mul_(bs, momentum)
                torch._foreach_add_(bs, ds, alpha=1 - dampening)
            else:
                for k, i in enumerate(idx):
                    if bs[k] is None:
                        bs[k] = torch.clone(ds[k]).detach()
                        bufs[i] = bs[k]
                    else:
                        bs[k].mul_(momentum).add_(ds[k], alpha=1 - dampening)
            if nesterov:
                ds = torch._foreach_add(ds, bs, alpha=momentum)
            else:
                ds = bs
        torch._foreach_add_(ps, ds, alpha=-lr)
        if noise is not None:
            torch._foreach_add_(ps, [noise[i] for i in idx], alpha=noise_std)
        if kick is not None:
            torch._foreach_add_(ps, [kick[i] for i in idx])


# --------------------------------------------------------------------------- controller
@dataclass
class ControllerConfig:
    """The documents' "Practical Algorithm" (section 13), every knob explicit.

    * ``C < kick_threshold`` -> tunneling kick ``kick_factor * sqrt(eta * D) * u``
      (``None`` here means: the group's ``kick_threshold`` / ``kick_factor``).
    * ``C > explore_threshold`` -> ``lr *= lr_factor`` and ``D_inject *= noise_factor``.
    * Bounds: ``lr <= max_lr`` (``None``: ``max_lr_factor`` x the group's lr when the controller
      first sees it); ``D_inject <= max_D_inject`` (``None``: ``max_noise_factor`` x the first
      non-zero ``D_inject``). When ``D_inject`` is 0, a noise boost sets it to ``noise_init``
      (``None``: the group's ``D``; if that is unknown too the boost only raises lr, and the
      event says so).
    * No action during the first ``warmup`` steps (the documents wait 10 steps), and at most one
      action every ``cooldown`` steps per group.
    """

    kick_threshold: float | None = None
    explore_threshold: float = 10.0
    lr_factor: float = 1.5
    noise_factor: float = 2.0
    kick_factor: float | None = None
    max_lr: float | None = None
    max_lr_factor: float = 10.0
    max_D_inject: float | None = None
    max_noise_factor: float = 16.0
    noise_init: float | None = None
    warmup: int = 10
    cooldown: int = 20
    kicks: bool = True
    explore: bool = True

    def __post_init__(self):
        if self.kick_threshold is not None:
            check_nonnegative("kick_threshold", self.kick_threshold)
        check_positive("explore_threshold", self.explore_threshold)
        if self.lr_factor < 1:
            raise ValueError(f"lr_factor must be >= 1, got lr_factor={self.lr_factor!r}")
        if self.noise_factor < 1:
            raise ValueError(f"noise_factor must be >= 1, got noise_factor={self.noise_factor!r}")
        if self.kick_factor is not None:
            check_nonnegative("kick_factor", self.kick_factor)
        if self.max_lr is not None:
            check_positive("max_lr", self.max_lr)
        if self.max_lr_factor < 1:
            raise ValueError(f"max_lr_factor must be >= 1, got max_lr_factor={self.max_lr_factor!r}")
        if self.max_D_inject is not None:
            check_nonnegative("max_D_inject", self.max_D_inject)
        if self.max_noise_factor < 1:
            raise ValueError(f"max_noise_factor must be >= 1, got max_noise_factor={self.max_noise_factor!r}")
        if self.noise_init is not None:
            check_positive("noise_init", self.noise_init)
        check_int("warmup", self.warmup, minimum=0)
        check_int("cooldown", self.cooldown, minimum=0)
        if (self.kick_threshold is not None and self.kick_threshold >= self.explore_threshold):
            raise ValueError(
                f"kick_threshold ({self.kick_threshold}) must be below explore_threshold ({self.explore_threshold})"
            )


# --------------------------------------------------------------------------- optimizer
_GROUP_STATE_KEYS = ("_hsgd_last_action", "_hsgd_lr_cap", "_hsgd_noise_cap")


class HeisenbergSGD(Optimizer):
    """SGD + Langevin noise + tunneling kicks (+ the documents' controller); see the module doc.

    Args:
        params: parameters or parameter groups, as for any ``torch.optim.Optimizer``.
        lr: learning rate (> 0).
        momentum, dampening, nesterov, weight_decay, maximize: as ``torch.optim.SGD``.
        D_inject: Langevin noise, ``sqrt(2 * D_inject * lr) * xi`` per step (>= 0).
        D: the diffusion coefficient in ``C = ||g||^2/(D d)`` and ``hbar = sqrt(eta D)``;
            ``None`` means ``D_inject`` (a monitor's measured D can be given per step).
        kick_threshold: kick when ``C`` is below it (``0`` or ``None`` disables kicks).
        kick_factor: kick amplitude in units of ``hbar`` (the documents' 3).
        kick_cooldown: minimum number of steps between two kicks without the controller.
        eta: the documents' learning inertia; ``None`` means ``1 / lr`` at each step.
        controller: ``False``, ``True`` (default :class:`ControllerConfig`) or a config.
        generator: a ``torch.Generator`` for the noise and kick directions; else ``seed``
            seeds a fresh one (``seed=None``: a non-deterministic seed). Never the global RNG.
        foreach: use the multi-tensor kernel (``None``: when every parameter is on CUDA).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        D_inject: float = 0.0,
        D: float | None = None,
        kick_threshold: float | None = 0.5,
        kick_factor: float = 3.0,
        kick_cooldown: int = 0,
        eta: float | None = None,
        controller: bool | ControllerConfig = False,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        foreach: bool | None = None,
    ):
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
            maximize=maximize, D_inject=D_inject, D=D, kick_threshold=kick_threshold, kick_factor=kick_factor,
            kick_cooldown=kick_cooldown, eta=eta, foreach=foreach,
        )
        self._check_hparams(defaults)
        if controller is True:
            controller = ControllerConfig()
        elif controller is False or controller is None:
            controller = None
        elif not isinstance(controller, ControllerConfig):
            raise TypeError(f"controller must be a bool or a ControllerConfig, got {controller!r}")
        self.controller: ControllerConfig | None = controller
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {generator!r}")
        if generator is not None and seed is not None:
            raise ValueError("give either generator= or seed=, not both")
        super().__init__(params, defaults)
        if generator is None:
            first = next((p for g in self.param_groups for p in g["params"]), None)
            device = first.device if first is not None else torch.device("cpu")
            generator = torch.Generator(device=device)
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(check_int("seed", seed))
        self.generator: torch.Generator = generator
        self.events: list[dict[str, Any]] = []
        self.last_consolidation: list[float | None] = [None] * len(self.param_groups)
        self._hsgd_step = 0

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_hparams(h: dict) -> None:
        check_positive("lr", h["lr"])
        check_nonnegative("momentum", h["momentum"])
        check_real("dampening", h["dampening"])
        check_nonnegative("weight_decay", h["weight_decay"])
        check_nonnegative("D_inject", h["D_inject"])
        if h["D"] is not None:
            check_positive("D", h["D"])
        if h["kick_threshold"] is not None:
            check_nonnegative("kick_threshold", h["kick_threshold"])
        check_nonnegative("kick_factor", h["kick_factor"])
        check_int("kick_cooldown", h["kick_cooldown"], minimum=0)
        if h["eta"] is not None:
            check_positive("eta", h["eta"])
        if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
            raise ValueError(
                f"nesterov needs momentum > 0 and dampening = 0, got momentum={h['momentum']!r}, "
                f"dampening={h['dampening']!r}"
            )

    def add_param_group(self, param_group: dict) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        # validate the group as it will be stored (defaults filled in) before torch appends it
        self._check_hparams({**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}})
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        cplx = [(i, tuple(p.shape), p.dtype) for i, p in enumerate(group["params"]) if p.is_complex()]
        if cplx:
            self.param_groups.pop()
            i, shape, dtype = cplx[0]
            raise TypeError(
                f"HeisenbergSGD takes real parameters; parameter {i} of this group is complex ({dtype}, shape "
                f"{shape}): its ||g||^2, noise and kick would not be those of its real coordinates. Give the "
                f"optimizer real parameters (e.g. store it as torch.view_as_real(z) and use torch.view_as_complex "
                f"in the forward)")
        group.setdefault("_hsgd_last_action", None)
        group.setdefault("_hsgd_lr_cap", None)
        group.setdefault("_hsgd_noise_cap", None)
        if hasattr(self, "last_consolidation"):
            self.last_consolidation.append(None)

    # ------------------------------------------------------------------ helpers
    def _draw_normal(self, p: Tensor) -> Tensor:
        g = self.generator
        x = torch.randn(p.shape, generator=g, dtype=p.dtype, device=g.device)
        return x if x.device == p.device else x.to(p.device)

    @staticmethod
    def _group_D(group: dict, diffusion: float | None) -> float | None:
        if diffusion is not None:
            return diffusion
        if group["D"] is not None:
            return float(group["D"])
        if group["D_inject"] > 0:
            return float(group["D_inject"])
        return None

    @staticmethod
    def _hbar(group: dict, D: float) -> float:
        eta = group["eta"] if group["eta"] is not None else 1.0 / group["lr"]
        return float(_hbar_formula(eta, D))  # the documents' hbar = sqrt(eta D)

    def _log(self, **event) -> None:
        self.events.append(event)

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(
        self,
        closure: Callable[[], Any] | None = None,
        consolidation: float | Sequence[float | None] | None = None,
        diffusion: float | Sequence[float | None] | None = None,
    ):
        """One update. ``consolidation`` / ``diffusion``: a value for every group, or one per group
        (``None`` entries: compute / use the group's own)."""
        loss = None
        if closure is not None and not callable(closure):
            raise TypeError(f"closure must be a function that re-evaluates the loss, or None, got {closure!r}")
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        n_groups = len(self.param_groups)
        cons = _per_group(consolidation, n_groups, "consolidation", check_nonnegative)
        diffs = _per_group(diffusion, n_groups, "diffusion", check_positive)
        step = self._hsgd_step
        for gi, group in enumerate(self.param_groups):
            params, grads, bufs = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("HeisenbergSGD does not support sparse gradients")
                params.append(p)
                grads.append(p.grad)
                if group["momentum"] != 0:
                    bufs.append(self.state[p].get("momentum_buffer"))
                else:
                    bufs.append(None)
            if not params:
                self.last_consolidation[gi] = None
                continue

            D = self._group_D(group, diffs[gi])
            C = cons[gi]
            want_c = self.controller is not None or (group["kick_threshold"] or 0) > 0
            if C is None and want_c and D is not None:
                sq = torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum().item()
                d = sum(g.numel() for g in grads)
                C = float(consolidation_ratio(sq, D, dim=d))
            if C is not None and not math.isfinite(C):
                raise NonFiniteError(
                    f"HeisenbergSGD: non-finite consolidation ratio C={C} at step {step} "
                    f"(group {gi}): non-finite gradients?", step=step, quantity="consolidation")
            self.last_consolidation[gi] = C

            kick = None
            if C is not None:
                kick = self._decide(gi, group, C, D, step, params)

            noise = [self._draw_normal(p) for p in params] if group["D_inject"] > 0 else None
            if noise is not None and not group.get("_hsgd_resolution_checked"):
                self._check_resolution(gi, group, params)
            heisenberg_sgd(
                params, grads, bufs, lr=group["lr"], weight_decay=group["weight_decay"],
                momentum=group["momentum"], dampening=group["dampening"], nesterov=group["nesterov"],
                maximize=group["maximize"], D_inject=group["D_inject"], noise=noise, kick=kick,
                foreach=group["foreach"],
            )
            if group["momentum"] != 0:
                for p, b in zip(params, bufs):
                    self.state[p]["momentum_buffer"] = b
        self._hsgd_step += 1
        return loss

    def _check_resolution(self, gi: int, group: dict, params: list[Tensor]) -> None:
        """Once per group, at its first noisy step: one warning when the injected noise's standard deviation
        ``sigma = sqrt(2 D_inject lr)`` is below a fifth of the spacing ``u`` of most of the group's entries
        (their dtype at their magnitude). ``p + sigma xi`` rounds to a multiple of ``u`` off ``p``: the variance
        it keeps is about that of the noise for ``sigma >= 0.3 u`` (1.06-1.30 sigma^2), 0.73 sigma^2 at
        ``0.25 u``, 0.31 at ``0.2 u``, 0.04 at ``0.15 u`` and nothing below ``0.1 u``, so below ``0.2 u`` the
        parameters diffuse far less than ``D_inject`` says, and nothing else would say so."""
        group["_hsgd_resolution_checked"] = True
        sigma = math.sqrt(2.0 * group["D_inject"] * group["lr"])
        lost = total = 0
        worst = None
        for p in params:
            below, _ = count_below_spacing(p, sigma, 0.2)  # at 0 any noise survives: not counted as lost
            lost, total = lost + below, total + p.numel()
            if below and (worst is None or p.dtype.itemsize < worst.itemsize):
                worst = p.dtype
        if total and lost > total // 2:
            warnings.warn(
                f"HeisenbergSGD (group {gi}): the injected noise, standard deviation sqrt(2 D_inject lr) = "
                f"{sigma:.3g}, is below a fifth of the spacing between representable values of {lost} of the "
                f"group's {total} entries ({worst} at their magnitudes): p + noise rounds back to p for nearly every "
                f"draw, so the parameters diffuse far less than D_inject = {group['D_inject']:.3g} says. Keep "
                f"higher-precision (float32 or float64) parameters, or raise D_inject / lr", RuntimeWarning,
                stacklevel=5)  # the caller of optimizer.step() (through torch's no_grad and step wrappers)

    def _kick_vectors(self, params: list[Tensor], amplitude: float) -> list[Tensor]:
        xs = [self._draw_normal(p) for p in params]
        norm = torch.sqrt(sum(x.double().pow(2).sum() for x in xs)).item()
        scale = amplitude / norm if norm > 0 else 0.0
        return [x.mul_(scale) for x in xs]

    def _decide(self, gi, group, C, D, step, params):
        """Kicks / controller actions for group ``gi`` at this step; returns kick vectors or None.

        Kicks use the lr / eta the step starts with; an 'explore' action changes lr and D_inject
        for this step's update onwards."""
        cfg = self.controller
        last = group["_hsgd_last_action"]
        if cfg is None:
            thr = group["kick_threshold"]
            if D is None or not thr or C >= thr or group["kick_factor"] == 0:
                return None
            if last is not None and step - last < group["kick_cooldown"]:
                return None
            return self._do_kick(gi, group, C, D, step, params, group["kick_factor"], "kick")
        # controller
        if step < cfg.warmup:
            return None
        if last is not None and step - last < cfg.cooldown:
            return None
        thr = cfg.kick_threshold if cfg.kick_threshold is not None else group["kick_threshold"]
        factor = cfg.kick_factor if cfg.kick_factor is not None else group["kick_factor"]
        if cfg.kicks and D is not None and thr and C < thr and factor > 0:
            return self._do_kick(gi, group, C, D, step, params, factor, "kick")
        if cfg.explore and C > cfg.explore_threshold:
            self._explore(gi, group, C, D, step)
        return None

    def _do_kick(self, gi, group, C, D, step, params, factor, action):
        hbar = self._hbar(group, D)
        amplitude = factor * hbar
        group["_hsgd_last_action"] = step
        self._log(step=step, group=gi, action=action, C=C, D=D, hbar=hbar, amplitude=amplitude,
                  lr=group["lr"])
        return self._kick_vectors(params, amplitude)

    def _explore(self, gi, group, C, D, step):
        cfg = self.controller
        if group["_hsgd_lr_cap"] is None:
            group["_hsgd_lr_cap"] = cfg.max_lr if cfg.max_lr is not None else cfg.max_lr_factor * group["lr"]
        lr_before, d_before = group["lr"], group["D_inject"]
        lr_cap = group["_hsgd_lr_cap"]
        lr_after = min(lr_before * cfg.lr_factor, lr_cap)
        note = []
        if d_before > 0:
            d_after = d_before * cfg.noise_factor
        else:
            init = cfg.noise_init if cfg.noise_init is not None else group["D"]
            if init is None:
                d_after = 0.0
                note.append("no noise_init and no D: noise left at 0")
            else:
                d_after = float(init)
        if d_after > 0 and group["_hsgd_noise_cap"] is None:
            base = d_before if d_before > 0 else d_after
            group["_hsgd_noise_cap"] = cfg.max_D_inject if cfg.max_D_inject is not None else cfg.max_noise_factor * base
        if group["_hsgd_noise_cap"] is not None:
            d_after = min(d_after, group["_hsgd_noise_cap"])
        if lr_after == lr_before and d_after == d_before:
            # nothing left to raise: at both bounds, do not log or start a cool-down every step
            return
        if lr_after < lr_before * cfg.lr_factor:
            note.append(f"lr capped at {lr_cap:g}")
        if d_before > 0 and d_after < d_before * cfg.noise_factor:
            note.append(f"D_inject capped at {group['_hsgd_noise_cap']:g}")
        group["lr"] = lr_after
        group["D_inject"] = d_after
        group["_hsgd_last_action"] = step
        self._log(step=step, group=gi, action="explore", C=C, D=D, lr_before=lr_before, lr_after=lr_after,
                  D_inject_before=d_before, D_inject_after=d_after, note="; ".join(note))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["heisenberg"] = {
            "generator_state": self.generator.get_state(),
            "step": self._hsgd_step,
            "events": [dict(e) for e in self.events],
            "controller": asdict(self.controller) if self.controller is not None else None,
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            keys = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"not an optimizer state_dict (it needs 'state' and 'param_groups'), got {keys}")
        state_dict = dict(state_dict)
        extra = state_dict.pop("heisenberg", None)
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for k in _GROUP_STATE_KEYS:
                group.setdefault(k, None)
        self.last_consolidation = [None] * len(self.param_groups)
        if extra is not None:
            self.generator.set_state(extra["generator_state"].clone())
            self._hsgd_step = int(extra["step"])
            self.events = [dict(e) for e in extra["events"]]
            if extra.get("controller") is not None and self.controller is None:
                self.controller = ControllerConfig(**extra["controller"])


def _per_group(value, n: int, name: str, check=check_real) -> list:
    """One value per parameter group (``None``: the group's own), each passed through ``check``
    (a consolidation ratio must be >= 0, a diffusion > 0)."""
    if value is None:
        return [None] * n
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} must be a number or one value per param group ({n}), got {len(value)}")
        return [None if v is None else check(name, v.item() if isinstance(v, Tensor) else v) for v in value]
    v = value.item() if isinstance(value, Tensor) else value
    return [check(name, v)] * n
