"""The training monitor: HHLD quantities of a real PyTorch training run.

Usage (plain loop; with AMP pass ``scaler=``; with gradient accumulation nothing changes)::

    mon = Monitor(model, optimizer, log_every=10)
    for x, y in loader:
        optimizer.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); optimizer.step()
        mon.step(loss)
    mon.to_dataframe()

The monitor never changes the model (no ``extend()``): it registers forward hooks on the
supported layers (per-sample gradient norms, :mod:`hhld.torch.persample`), a forward
pre-hook on the model (counts micro-batches and samples) and step pre/post hooks on the
optimizer (the gradients are read in the step pre-hook, i.e. after ``GradScaler``
unscaled them; a step that ``GradScaler`` skips for non-finite gradients never reaches it
and is recorded as skipped). Values stay device tensors, summed over the logging
interval; the host synchronises once per interval (tier 2 syncs when it runs).

Quantities and schedules (:mod:`hhld.torch.quantities`): tier 0 every step
(:class:`GradientStats`, :class:`UncertaintyWindow`), tier 1 every ``tier1_every`` steps
(:class:`NoiseScale`), tier 2 every ``tier2_every`` steps when ``loss_fn`` and
``hessian_batch`` are given (:class:`Curvature`).

Loss conventions: ``loss_reduction`` says whether each micro-batch loss is a mean
(default) or a sum over its samples; ``accumulation="mean"`` (default) that the
micro-batch losses of one step are divided by their number (the usual accumulation
pattern), ``"sum"`` that they are not.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .._validation import NonFiniteError
from ..observables import RegimeThresholds
from .noise import gradient_noise_stats
from .persample import PerSampleSqNorms
from .quantities import (Curvature, GradientStats, NoiseScale, PhaseTransitionDetector, Quantity, RegimeTracker,
                         StepContext, UncertaintyWindow)

__all__ = ["Monitor", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile`` (``_orig_mod``) and DDP (``module``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


class Monitor:
    """HHLD training monitor for any ``nn.Module`` + ``torch.optim.Optimizer``.

    Parameters (all keyword except the first two):
      ``log_every`` steps per history row (one host sync per row); ``batch_size`` (default:
      counted from the model's first tensor argument); ``scaler`` a ``torch.amp.GradScaler``;
      ``D`` a known diffusion (e.g. injected noise) for ``C = ||g||^2/(D d)``, default the
      measured SGD diffusion of tier 1; ``tier1_every`` (``None`` disables tier 1);
      ``window`` of the uncertainty product; ``loss_fn`` + ``hessian_batch=(inputs, targets)``
      enable tier 2 (``tier2_every``, ``n_probes``, ``power_iters``, ``eta_opt_n``);
      ``thresholds`` (:class:`hhld.observables.RegimeThresholds`), ``regime_patience``,
      ``drop_factor`` for regimes and phase-transition events; ``on_nonfinite`` in
      ``{"raise", "warn"}``; ``sinks`` objects with ``write(row)`` / ``close()``
      (:mod:`hhld.torch.sinks`); ``extra_quantities`` more :class:`Quantity` objects.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, log_every: int = 10,
                 batch_size: int | None = None, scaler=None, D: float | None = None,
                 loss_reduction: str = "mean", accumulation: str = "mean", tier1_every: int | None = 1,
                 window: int = 50, loss_fn=None, hessian_batch=None, tier2_every: int = 250, n_probes: int = 4,
                 power_iters: int = 3, eta_opt_n: float | None = None, thresholds: RegimeThresholds | None = None,
                 regime_patience: int = 2, drop_factor: float = 3.0, on_nonfinite: str = "raise", sinks=(),
                 extra_quantities=(), track_update: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        for name, v in (("loss_reduction", loss_reduction), ("accumulation", accumulation)):
            if v not in ("mean", "sum"):
                raise ValueError(f"{name} must be 'mean' or 'sum', got {v!r}")
        if on_nonfinite not in ("raise", "warn"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'warn', got {on_nonfinite!r}")
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ValueError(f"log_every must be an integer >= 1, got {log_every!r}")
        if D is not None and not (D > 0 and math.isfinite(D)):
            raise ValueError(f"D must be > 0 and finite, got D={D!r}")
        self.model = model
        self.inner = unwrap_model(model)
        self.optimizer = optimizer
        named = {n: p for n, p in self.inner.named_parameters() if p.requires_grad}
        if not named:
            raise ValueError(f"model {type(self.inner).__name__} has no trainable parameters "
                             "(no parameter with requires_grad=True); nothing to monitor")
        by_id = {id(p): n for n, p in named.items()}
        opt_params = [p for g in optimizer.param_groups for p in g["params"]]
        foreign = [p for p in opt_params if id(p) not in by_id]
        if foreign:
            shapes = ", ".join(str(tuple(p.shape)) for p in foreign[:3])
            raise ValueError(f"the optimizer holds {len(foreign)} parameter(s) that are not trainable parameters of "
                             f"the model (shapes {shapes}{', ...' if len(foreign) > 3 else ''}); build the optimizer "
                             "over model.parameters()")
        opt_ids = {id(p) for p in opt_params}
        self.names = [n for n, p in named.items() if id(p) in opt_ids]
        self.params = [named[n] for n in self.names]
        self.not_optimized = [n for n in named if named[n] is not None and id(named[n]) not in opt_ids]
        self.dim = sum(p.numel() for p in self.params)
        self.log_every = log_every
        self.batch_size = batch_size
        self.scaler = scaler
        self.D = D
        self.loss_reduction = loss_reduction
        self.accumulation = accumulation
        self.on_nonfinite = on_nonfinite
        self.sinks = list(sinks)
        self.thresholds = thresholds or RegimeThresholds()
        self.regime = RegimeTracker(self.thresholds, regime_patience)
        self.transitions = PhaseTransitionDetector(drop_factor)

        self.quantities: list[Quantity] = [GradientStats(track_update=track_update), UncertaintyWindow(window)]
        self.noise = NoiseScale(tier1_every) if tier1_every else None
        if self.noise is not None:
            self.quantities.append(self.noise)
        self.curvature = None
        if loss_fn is not None and hessian_batch is not None:
            self.curvature = Curvature(loss_fn, hessian_batch, tier2_every, n_probes, power_iters, eta_opt_n)
            self.quantities.append(self.curvature)
        elif (loss_fn is None) != (hessian_batch is None):
            raise ValueError("tier 2 needs both loss_fn and hessian_batch=(inputs, targets)")
        self.quantities.extend(extra_quantities)

        self.history: list[dict] = []
        self.events: list[dict] = []
        self.step_count = 0
        self.last_measured_D = None
        self.last_measured_D_rel_se = None
        self._reset_interval()
        self._reset_step()
        self._handles = []
        self.hooks = None
        if self.noise is not None:
            self.hooks = PerSampleSqNorms(self.inner, dict(zip(self.names, self.params)), on_pass_end=self._on_pass_end)
            self.hooks.attach()
            self.hooks.enabled = self.noise.due(0)
        self._handles.append(self.inner.register_forward_hook(self._forward_hook))
        self._handles.append(optimizer.register_step_pre_hook(self._opt_pre_hook))
        self._handles.append(optimizer.register_step_post_hook(self._opt_post_hook))
        self._internal = False
        self._closed = False

    # ------------------------------------------------------------------ state
    def _reset_interval(self):
        self._sums: dict = {}
        self._counts: dict = {}
        self._per_param_steps: list = []
        self._skipped = 0
        self._steps_in_interval = 0

    def _reset_step(self):
        self._n_micro = 0
        self._n_samples = 0
        self._captured = False
        self._ctx = None
        self._covered_step: set = set()
        self._micro_prev = None
        self._micro_grads: list = []

    def _add(self, vals: dict):
        for k, v in vals.items():
            if v is None:
                continue
            if isinstance(v, torch.Tensor):
                v = v.detach().reshape(())
            self._sums[k] = self._sums[k] + v if k in self._sums else v
            self._counts[k] = self._counts.get(k, 0) + 1

    # ------------------------------------------------------------------ hooks
    def _forward_hook(self, module, args, output):
        # count micro-batches and samples only for forward passes that are backpropagated
        if self._internal or not torch.is_grad_enabled():
            return
        n = None
        for a in args:
            if isinstance(a, torch.Tensor) and a.dim() > 0:
                n = int(a.shape[0])
                break
        out = output
        if isinstance(out, dict):
            out = next((v for v in out.values() if isinstance(v, torch.Tensor)), None)
        elif isinstance(out, (tuple, list)):
            out = next((v for v in out if isinstance(v, torch.Tensor)), None)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return

        def _count(grad, n=n):
            self._n_micro += 1
            self._n_samples += n or 0

        out.register_hook(_count)

    def _uncovered(self):
        return [i for i, n in enumerate(self.names) if n not in self._covered_step]

    def _on_pass_end(self, hooks):
        self._covered_step |= hooks.covered_last
        unc = [self.params[i] for i in self._uncovered()]
        if not unc or not self.hooks.enabled:
            return
        cur = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in unc]
        if self._micro_prev is None:
            self._micro_grads.append(cur)
        else:
            self._micro_grads.append([c - q for c, q in zip(cur, self._micro_prev)])
        self._micro_prev = cur

    def _opt_pre_hook(self, optimizer, args, kwargs):
        if self._internal:
            return
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not idx:
            return
        B = self.batch_size or self._n_samples
        if not B:
            raise ValueError("Monitor could not infer the batch size (the model's first argument is not a tensor "
                             "with the batch on axis 0): pass batch_size=")
        group_lr = optimizer.param_groups[0]["lr"]
        lr = float(group_lr)
        ctx = StepContext(step=self.step_count, names=[self.names[i] for i in idx],
                          params=[self.params[i] for i in idx], grads=[self.params[i].grad.detach() for i in idx],
                          lr=lr, batch_size=B, n_micro=max(self._n_micro, 1), dim=self.dim)
        ctx.extra["model"] = self.inner
        for q in self.quantities:
            if q.tier == 2 or not q.due(self.step_count):
                continue
            if q is self.noise:
                self._prepare_noise(ctx)
            vals = q.pre_step(ctx)
            self._add(vals)
        self._per_param_steps.append((self.step_count, ctx.names, ctx.extra.get("per_param_sq")))
        self._ctx = ctx
        self._captured = True

    def _prepare_noise(self, ctx):
        hooks = self.hooks
        k = ctx.n_micro
        B = ctx.batch_size
        scale = None
        if self.scaler is not None and getattr(self.scaler, "is_enabled", lambda: True)():
            scale = self.scaler._scale if getattr(self.scaler, "_scale", None) is not None else None
        passes = []
        for ps in hooks.passes:
            b = ps.shape[0]
            alpha = (1.0 / b if self.loss_reduction == "mean" else 1.0) * (1.0 / k if self.accumulation == "mean" else 1.0)
            v = ps.double() / (alpha * alpha)
            if scale is not None:
                v = v / scale.double().to(v.device) ** 2
            passes.append(v)
        hooks.passes = []
        bsum = sum(p.shape[0] for p in passes)
        if passes and bsum != B:
            passes = []  # the hooks saw a different number of samples (e.g. batch not on axis 0): skip
        b0 = B / k
        alpha = (1.0 / b0 if self.loss_reduction == "mean" else 1.0) * (1.0 / k if self.accumulation == "mean" else 1.0)
        gscale = 1.0 / (alpha * B)  # true batch-mean gradient = gscale * p.grad
        per = ctx.extra.get("per_param_sq")
        if per is None:
            per = torch.stack(torch._foreach_norm(ctx.grads)).double().pow(2)
            ctx.extra["per_param_sq"] = per
        ctx.extra["noise_per_param_sq"] = per * gscale * gscale
        name_idx = {n: i for i, n in enumerate(ctx.names)}
        cov = [name_idx[n] for n in ctx.names if n in self._covered_step]
        unc = [name_idx[n] for n in ctx.names if n not in self._covered_step]
        ctx.extra["per_sample_passes"] = passes
        ctx.extra["covered_idx"] = cov
        ctx.extra["uncovered_idx"] = unc
        ctx.extra["covered_dim"] = sum(ctx.params[i].numel() for i in cov)
        if self._micro_grads:
            mg = []
            for j, g in enumerate(self._micro_grads):
                f = 1.0 / (alpha * b0)
                if scale is not None:
                    f = f / scale.double()
                mg.append([t * f for t in g])
            ctx.extra["micro_grads"] = mg

    def _opt_post_hook(self, optimizer, args, kwargs):
        if self._internal or self._ctx is None:
            return
        for q in self.quantities:
            if q.tier == 2 or not q.due(self.step_count):
                continue
            self._add(q.post_step(self._ctx))

    # ------------------------------------------------------------------ API
    def step(self, loss=None) -> dict | None:
        """Close the current training step (call after ``optimizer.step()`` / ``scaler.update()``).

        ``loss`` (tensor or float) is recorded as the step's loss. Returns the history row
        when this step ends a logging interval, else ``None``.
        """
        if self._closed:
            raise RuntimeError("Monitor is closed")
        if not self._captured:
            self._skipped += 1
            self.events.append({"step": self.step_count, "event": "skipped_step",
                                "reason": "optimizer.step did not run (e.g. GradScaler found inf/NaN gradients)"})
        else:
            if loss is not None:
                lv = loss.detach().double() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss), dtype=torch.float64)
                self._add({"loss": lv.reshape(())})
            if self.curvature is not None and self.curvature.due(self.step_count):
                self._internal = True
                enabled = self.hooks.enabled if self.hooks else None
                if self.hooks:
                    self.hooks.enabled = False
                try:
                    self._add(self.curvature.post_step(self._ctx))
                finally:
                    self._internal = False
                    if self.hooks:
                        self.hooks.enabled = enabled
            self._steps_in_interval += 1
        self.step_count += 1
        if self.hooks is not None:
            self.hooks.reset()
            self.hooks.enabled = self.noise.due(self.step_count)
        self._reset_step()
        if self.step_count % self.log_every == 0:
            return self.flush()
        return None

    def flush(self) -> dict | None:
        """Synchronise once, finish the interval's row, write it to the sinks."""
        if not self._sums and not self._skipped:
            return None
        keys = list(self._sums)
        vals = torch.stack([self._sums[k].to("cpu", torch.float64) if isinstance(self._sums[k], torch.Tensor)
                            else torch.tensor(float(self._sums[k]), dtype=torch.float64) for k in keys]).tolist() if keys else []
        sums = dict(zip(keys, vals))
        counts = dict(self._counts)
        if "grad_sq" in sums and not math.isfinite(sums["grad_sq"]):
            self._report_nonfinite()
        row = {"step": self.step_count - 1, "steps": self._steps_in_interval, "skipped_steps": self._skipped}
        if counts.get("loss"):
            row["loss"] = sums["loss"] / counts["loss"]
        if "D" in counts and counts["D"]:
            self.last_measured_D = sums["D"] / counts["D"]
        for q in self.quantities:
            row.update(q.finalize(sums, counts, self))
        if self.noise is not None and "D" in row and row["D"] is not None:
            self.last_measured_D = row["D"]
        C = row.get("C") if row.get("C") is not None else row.get("C_sgd")
        row["regime_from"] = "C" if row.get("C") is not None else "C_sgd"
        regime, changed = self.regime.update(C)
        row["regime"] = regime
        row["regime_changed"] = changed
        ev = self.transitions.update(row["step"], C)
        row["phase_transition"] = ev is not None
        if ev is not None:
            self.events.append(ev)
        if changed:
            self.events.append({"step": row["step"], "event": "regime", "regime": regime, "C": C})
        self.history.append(row)
        for s in self.sinks:
            s.write(row)
        self._reset_interval()
        return row

    def _report_nonfinite(self):
        for step, names, per in self._per_param_steps:
            if per is None:
                continue
            bad = (~torch.isfinite(per)).nonzero()
            if len(bad):
                name = names[int(bad[0])]
                msg = f"non-finite gradient in parameter {name!r} at step {step}"
                if self.on_nonfinite == "raise":
                    raise NonFiniteError(msg, step=step, quantity=name)
                warnings.warn(msg + "; the interval's statistics are NaN/inf", RuntimeWarning, stacklevel=3)
                self.events.append({"step": step, "event": "nonfinite_gradient", "parameter": name})
                return

    def noise_estimator_summary(self) -> str:
        """Which estimator serves which parameters, e.g. ``"hooks:linear=4; micro_batch=2"``."""
        if self.hooks is None:
            return "off"
        counts: dict = {}
        for n in self.names:
            if n in self.hooks.covered_ever:
                m = next(m for m, d in self.hooks.module_params.items() if n in d.values())
                k = "hooks:" + self.hooks.module_kind[m]
            else:
                k = "micro_batch_or_excluded"
            counts[k] = counts.get(k, 0) + 1
        return "; ".join(f"{k}={v}" for k, v in sorted(counts.items()))

    def uncovered_parameters(self) -> dict[str, str]:
        """Parameters without a per-sample hook estimator and why (their fallback is stated in the rows)."""
        if self.hooks is None:
            return {}
        out = {}
        for n in self.names:
            if n not in self.hooks.covered_ever:
                out[n] = self.hooks.reasons.get(n, "hooks did not fire (parameter used outside its module's forward)")
        return out

    def noise_stats(self, loss_fn, inputs, targets, **kw):
        """On-demand :func:`hhld.torch.noise.gradient_noise_stats` on a batch (exact fallbacks)."""
        self._internal = True
        enabled = self.hooks.enabled if self.hooks else None
        if self.hooks:
            self.hooks.enabled = False
        try:
            kw.setdefault("lr", float(self.optimizer.param_groups[0]["lr"]))
            kw.setdefault("loss_reduction", self.loss_reduction)
            return gradient_noise_stats(self.inner, loss_fn, inputs, targets, **kw)
        finally:
            self._internal = False
            if self.hooks:
                self.hooks.enabled = enabled

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.history)

    def close(self):
        """Flush the last partial interval, remove every hook, close the sinks."""
        if self._closed:
            return
        self.flush()
        for h in self._handles:
            h.remove()
        if self.hooks is not None:
            self.hooks.detach()
        for s in self.sinks:
            s.close()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
