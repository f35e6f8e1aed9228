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

Cost per step (tier 0): one fused ``_foreach_norm`` over the gradients plus a few scalar ops;
the values of each step are appended to lists and reduced at the interval's end. The parameter
and update norms are sampled at the last step of each interval, the uncertainty window every
``uncertainty_every`` steps (see :class:`GradientStats`, :class:`UncertaintyWindow`).

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


def _sum(values):
    try:
        return math.fsum(values)
    except (ValueError, OverflowError):  # inf + -inf, or an intermediate overflow: plain summation (nan / inf)
        return sum(values, 0.0)


class Monitor:
    """HHLD training monitor for any ``nn.Module`` + ``torch.optim.Optimizer``.

    Parameters (all keyword except the first two):
      ``log_every`` steps per history row (one host sync per row); ``batch_size`` (default:
      counted from the model's first tensor argument); ``scaler`` a ``torch.amp.GradScaler``;
      ``D`` a known diffusion (e.g. injected noise) for ``C = ||g||^2/(D d)``, default the
      measured SGD diffusion of tier 1; ``tier1_every`` (``None`` disables tier 1);
      ``window`` (steps) of the uncertainty product, sampled every ``uncertainty_every`` steps
      (default ``min(5, window // 2)``; ``window=None`` switches it off); ``loss_fn`` + ``hessian_batch=(inputs, targets)``
      enable tier 2 (``tier2_every``, ``n_probes``, ``power_iters``, ``eta_opt_n``);
      ``thresholds`` (:class:`hhld.observables.RegimeThresholds`), ``regime_patience``,
      ``drop_factor`` for regimes and phase-transition events; ``on_nonfinite`` in
      ``{"raise", "warn"}``; ``sinks`` objects with ``write(row)`` / ``close()``
      (:mod:`hhld.torch.sinks`); ``extra_quantities`` more :class:`Quantity` objects;
      ``track_update`` the update norm (sampled at each interval's last step);
      ``conv_estimator`` for Conv1d/2d per-sample norms (``"auto"``, ``"exact"``, ``"sketch"``,
      see :mod:`hhld.torch.persample`) and ``conv_probes`` the sketch's probes per sample (default 1:
      relative s.d. of a step's conv contribution at most ``sqrt(2 / (k B_eff))``).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, log_every: int = 10,
                 batch_size: int | None = None, scaler=None, D: float | None = None,
                 loss_reduction: str = "mean", accumulation: str = "mean", tier1_every: int | None = 1,
                 window: int | None = 50, uncertainty_every: int | None = None, loss_fn=None, hessian_batch=None, tier2_every: int = 250, n_probes: int = 4,
                 power_iters: int = 3, eta_opt_n: float | None = None, thresholds: RegimeThresholds | None = None,
                 regime_patience: int = 2, drop_factor: float = 3.0, on_nonfinite: str = "raise", sinks=(),
                 extra_quantities=(), track_update: bool = True, conv_estimator: str = "auto",
                 conv_probes: int = 1):
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

        self.quantities: list[Quantity] = [GradientStats(track_update=track_update, sample_every=log_every)]
        if window is not None:
            if uncertainty_every is None:
                uncertainty_every = max(1, min(5, int(window) // 2))
            self.quantities.append(UncertaintyWindow(window, uncertainty_every))
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
        self._interval_D = None
        self.interval_values: dict = {}
        self.last_measured_D_rel_se = None
        self._reset_interval()
        self._reset_step()
        self._handles = []
        self.hooks = None
        if self.noise is not None:
            self.hooks = PerSampleSqNorms(self.inner, dict(zip(self.names, self.params)), on_pass_end=self._on_pass_end,
                                          conv_estimator=conv_estimator, conv_probes=conv_probes)
            self.hooks.attach()
            self.hooks.enabled = self.noise.due(0)
        self._handles.append(self.inner.register_forward_hook(self._forward_hook))
        self._handles.append(optimizer.register_step_pre_hook(self._opt_pre_hook))
        self._handles.append(optimizer.register_step_post_hook(self._opt_post_hook))
        self._internal = False
        self._closed = False

    # ------------------------------------------------------------------ state
    def _reset_interval(self):
        self._vals: dict = {}
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
        # append only (no device op): the interval's values are reduced in flush()
        store = self._vals
        for k, v in vals.items():
            if v is None:
                continue
            lst = store.get(k)
            if lst is None:
                store[k] = [v]
            else:
                lst.append(v)

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
        if len(self._covered_step) == len(self.names) or not self.hooks.enabled:
            return
        unc = [self.params[i] for i in self._uncovered()]
        if not unc:
            return
        cur = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in unc]
        if self._micro_prev is None:
            self._micro_grads.append(cur)
        else:
            self._micro_grads.append([c - q for c, q in zip(cur, self._micro_prev)])
        self._micro_prev = cur

    def _opt_pre_hook(self, optimizer, args, kwargs):
        if self._internal:
            return None
        closure = kwargs.get("closure") if kwargs else None
        i0 = 1 if args and args[0] is optimizer else 0  # torch passes (self, closure, ...) as args
        in_args = closure is None and len(args) > i0 and callable(args[i0])
        if in_args:
            closure = args[i0]
        if closure is None:
            self._capture(optimizer)
            return None

        # step(closure): the gradients exist only once the closure has run (Lightning's automatic
        # optimisation, LBFGS): read them right after its first call, before the update
        def wrapped():
            out = closure()
            if not self._captured:
                self._capture(optimizer)
            return out

        if in_args:
            return tuple(args[:i0]) + (wrapped,) + tuple(args[i0 + 1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["closure"] = wrapped
        return args, kwargs

    def _capture(self, optimizer):
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            idx = [i for i, g in enumerate(grads) if g is not None]
            if not idx:
                return
            names, params, grads = [self.names[i] for i in idx], [self.params[i] for i in idx], [grads[i] for i in idx]
        else:
            names, params = self.names, self.params
        B = self.batch_size or self._n_samples
        if not B and self.hooks is not None and self.hooks.passes:
            # the model's own forward hook did not fire (e.g. a LightningModule whose training_step calls
            # a submodule): the per-sample hooks saw the micro-batches
            B = sum(int(q.shape[0]) for q in self.hooks.passes)
            self._n_micro = len(self.hooks.passes)
        if not B:
            raise ValueError("Monitor could not infer the batch size (the model's first argument is not a tensor "
                             "with the batch on axis 0): pass batch_size=")
        group_lr = optimizer.param_groups[0]["lr"]
        lr = float(group_lr)
        ctx = StepContext(step=self.step_count, names=names, params=params, grads=grads,
                          lr=lr, batch_size=B, n_micro=max(self._n_micro, 1), dim=self.dim)
        ctx.extra["model"] = self.inner
        for q in self.quantities:
            if q.tier == 2 or not q.due(self.step_count):
                continue
            if q is self.noise:
                self._prepare_noise(ctx)
            vals = q.pre_step(ctx)
            self._add(vals)
        self._per_param_steps.append((self.step_count, ctx.names, ctx.extra.get("per_param_norm")))
        self._ctx = ctx
        self._captured = True

    def _prepare_noise(self, ctx):
        hooks = self.hooks
        k = ctx.n_micro
        B = ctx.batch_size
        scale = None
        if self.scaler is not None and getattr(self.scaler, "is_enabled", lambda: True)():
            scale = self.scaler._scale if getattr(self.scaler, "_scale", None) is not None else None
        passes = hooks.passes
        hooks.passes = []
        mean_red = self.loss_reduction == "mean"
        acc = (1.0 / k) if self.accumulation == "mean" else 1.0
        ps_sum = None
        if passes and sum(int(q.shape[0]) for q in passes) == B:
            # sum_i ||g_i||^2 at the true per-sample scale: pass p's hook norms carry alpha_p^2
            for q in passes:
                alpha = (1.0 / q.shape[0] if mean_red else 1.0) * acc
                v = q.sum(dtype=torch.float64) * (1.0 / (alpha * alpha))
                ps_sum = v if ps_sum is None else ps_sum + v
            if scale is not None:
                ps_sum = ps_sum / scale.double().to(ps_sum.device) ** 2
        # else: the hooks saw a different number of samples (e.g. batch not on axis 0): skip the step
        b0 = B / k
        alpha = (1.0 / b0 if mean_red else 1.0) * acc
        gscale = 1.0 / (alpha * B)  # true batch-mean gradient = gscale * p.grad
        ctx.extra["per_sample_sum"] = ps_sum
        ctx.extra["gscale_sq"] = gscale * gscale
        cov_names = self._covered_step
        if len(ctx.names) == len(self.names) and len(cov_names) == len(self.names):
            ctx.extra["covered_sq"] = ctx.extra["grad_sq"]  # every parameter covered: reuse tier 0's ||g||^2
            ctx.extra["covered_dim"] = self.dim
            return
        per = ctx.extra["per_param_norm"].double()
        cov = [i for i, n in enumerate(ctx.names) if n in cov_names]
        unc = [i for i, n in enumerate(ctx.names) if n not in cov_names]
        sq = per * per
        ctx.extra["covered_sq"] = sq[cov].sum() if cov else 0.0
        ctx.extra["covered_dim"] = sum(ctx.params[i].numel() for i in cov)
        if unc and self._micro_grads:
            ctx.extra["uncovered_sq"] = sq[unc].sum()
            f = 1.0 / (alpha * b0)
            if scale is not None:
                f = f / scale.double()
            ctx.extra["micro_grads"] = [[t * f for t in g] for g in self._micro_grads]

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
                self._add({"loss": loss.detach() if isinstance(loss, torch.Tensor) else float(loss)})
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

    def _gather(self):
        """The interval's values as host floats, with one synchronisation."""
        tens, slots = [], []
        out = {}
        for k, lst in self._vals.items():
            out[k] = list(lst)
            for j, v in enumerate(lst):
                if isinstance(v, torch.Tensor):
                    tens.append(v if v.dim() == 0 else v.reshape(()))
                    slots.append((k, j))
                else:
                    out[k][j] = float(v)
        if tens:
            groups: dict = {}
            for i, t in enumerate(tens):
                groups.setdefault((t.device, t.dtype), []).append(i)
            order = [i for ids in groups.values() for i in ids]
            parts = [torch.stack([tens[i] for i in ids]).detach().to("cpu", torch.float64) for ids in groups.values()]
            flat = (parts[0] if len(parts) == 1 else torch.cat(parts)).tolist()
            for i, v in zip(order, flat):
                k, j = slots[i]
                out[k][j] = v
        return out

    def flush(self) -> dict | None:
        """Synchronise once, finish the interval's row, write it to the sinks."""
        if not self._vals and not self._skipped:
            return None
        vals = self._gather()
        sums = {k: _sum(v) for k, v in vals.items()}
        counts = {k: len(v) for k, v in vals.items()}
        self.interval_values = vals
        grads_bad = "grad_sq" in sums and not math.isfinite(sums["grad_sq"])
        if grads_bad:
            self._report_nonfinite()  # raises, or warns once naming the parameter
        row = {"step": self.step_count - 1, "steps": self._steps_in_interval, "skipped_steps": self._skipped}
        if counts.get("loss"):
            row["loss"] = sums["loss"] / counts["loss"]
        self._interval_D = None
        nrow = {}
        if self.noise is not None:
            nrow = self.noise.finalize(sums, counts, self)
            if nrow.get("D") is not None:
                self._interval_D = nrow["D"]
                self.last_measured_D = nrow["D"]
        for q in self.quantities:
            row.update(nrow if q is self.noise else q.finalize(sums, counts, self))
        if not grads_bad:
            self._check_row(row)
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

    def _check_row(self, row):
        """No silent NaN: a NaN in the row raises (``on_nonfinite="raise"``) or warns and is recorded."""
        bad = [k for k, v in row.items() if isinstance(v, float) and math.isnan(v)]
        if not bad:
            return
        msg = (f"non-finite monitor values {bad} in the interval ending at step {row['step']} "
               "(gradients were finite: overflow in a per-sample norm or the loss?)")
        if self.on_nonfinite == "raise":
            raise NonFiniteError(msg, step=row["step"], quantity=bad[0])
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        self.events.append({"step": row["step"], "event": "nonfinite_value", "keys": bad})

    def _report_nonfinite(self):
        for step, names, per in self._per_param_steps:
            if per is None:
                continue
            bad = (~torch.isfinite(per.double() ** 2)).nonzero()
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
