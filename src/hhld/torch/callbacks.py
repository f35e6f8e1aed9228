"""Training-framework callbacks that run the :class:`~hhld.torch.Monitor`: PyTorch Lightning and
Hugging Face ``transformers.Trainer``.

Both call ``monitor.step`` once per *optimizer* step (not per batch), so gradient accumulation gives
one row per optimizer step and no spurious ``skipped_step`` events, with the step's loss the mean of
its micro-batch losses. The frameworks are imported only when a callback is created
(``pip install 'hhld[lightning]'`` / ``pip install 'hhld[hf]'``).

* :func:`lightning_callback` (or ``LightningMonitorCallback(**monitor_kwargs)``): the monitor runs
  on the LightningModule and its first optimizer. An optimizer step is recognised by
  ``trainer.global_step`` advancing. Lightning runs the training step inside the closure it passes
  to ``optimizer.step`` and clips (``gradient_clip_val``) right after it; the monitor reads the
  gradients right after that closure, i.e. the clipped ones. Lightning divides the training-step
  loss by ``accumulate_grad_batches``; the callback multiplies it back. Under ``precision="16-mixed"``
  Lightning's ``GradScaler`` is passed to the monitor. When the training step does not call the
  LightningModule's own forward (it calls a submodule, ``self.net(x)``), the samples of the step's
  batches, counted as Lightning counts them for logging (``extract_batch_size``), are given to the
  monitor as its batch size (unless ``batch_size=`` is given). Each row is ``log_dict``-ed under ``hhld/``.
* ``HFMonitorCallback(**monitor_kwargs)``: a ``transformers.TrainerCallback``; the monitor is built
  in ``on_train_begin`` from the model and the optimizer the Trainer passes (accelerate's
  ``AcceleratedOptimizer`` unwrapped to the torch optimizer; its ``GradScaler`` under fp16 passed
  on) and stepped in ``on_step_end``. The loss is the model outputs' ``loss`` (a forward hook): with
  ``num_items_in_batch`` (the Trainer's token-count normalisation) each micro-batch loss is already a
  share of the step's loss and they are summed, else their mean is taken. The number of samples of
  each step is counted from the model's keyword tensors (``input_ids``, ...) and given to the
  monitor as ``batch_size`` (unless ``batch_size=`` is given). Rows go to ``trainer.state.log_history``
  (keys ``hhld/...``) and ``callback.monitor.history``.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping

import torch

from .copy_inert import CopyInert

# HFMonitorCallback / LightningMonitorCallback are created on first access (they subclass the frameworks' types)
__all__ = ["lightning_callback", "hf_callback"]

_CLASSES: dict = {}


def _numeric(row: dict) -> dict:
    return {f"hhld/{k}": float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def _mean(losses):
    if not losses:
        return None
    if all(isinstance(v, torch.Tensor) for v in losses):
        return torch.stack([v.reshape(()).float() for v in losses]).mean()
    return sum(float(v) for v in losses) / len(losses)


# ---------------------------------------------------------------------- Lightning
def _lightning_class():
    if "lightning" in _CLASSES:
        return _CLASSES["lightning"]
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError as exc:
            raise ImportError("the Lightning callback needs lightning: pip install 'hhld[lightning]'") from exc
    from .monitor import Monitor

    class LightningMonitorCallback(Callback):
        """Runs a :class:`~hhld.torch.Monitor` once per optimizer step of a Lightning ``Trainer``."""

        def __init__(self, log: bool = True, **monitor_kwargs):
            self.monitor_kwargs = monitor_kwargs
            self.log = log
            self.monitor = None
            self._losses: list = []
            self._last_step = 0
            self._handles: list = []
            self._step_handle = None
            self._opt_steps = self._last_opt_steps = 0  # steps the monitored optimizer took
            self._steps_in_batch = 0
            self._warned_steps = False
            self._window = 0  # micro-batches since the last optimizer step
            self._warned_window = False
            self._samples = 0
            self._forward_ran = False
            self._restored = None  # a checkpoint's monitor state, applied once the monitor is built

        # Lightning keeps a callback's state_dict in its checkpoints and hands it back on resume
        # (trainer.fit(..., ckpt_path=...)) before on_train_start builds the monitor
        def state_dict(self):
            if self.monitor is None or self.monitor.closed:
                return {"monitor": self._restored} if self._restored is not None else {}
            try:
                return {"monitor": self.monitor.state_dict()}
            except RuntimeError as exc:  # in the middle of an optimizer step: the checkpoint goes without it
                warnings.warn(f"LightningMonitorCallback: the checkpoint holds no monitor state ({exc}); a run "
                              "resumed from it starts a new monitor history", RuntimeWarning, stacklevel=2)
                return {}

        def load_state_dict(self, state_dict):
            self._restored = state_dict.get("monitor")

        def on_train_start(self, trainer, pl_module):
            if len(trainer.optimizers) > 1:
                warnings.warn(f"LightningMonitorCallback monitors the first of {len(trainer.optimizers)} optimizers",
                              RuntimeWarning, stacklevel=2)
            kw = dict(self.monitor_kwargs)
            scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
            if scaler is not None:
                kw.setdefault("scaler", scaler)
            opt = trainer.optimizers[0]
            if "batch_size" not in kw:
                # registered before the monitor's own hooks, so it runs first (see _before_step)
                self._handles.append(opt.register_step_pre_hook(CopyInert(self._before_step)))
                self._handles.append(pl_module.register_forward_hook(CopyInert(self._module_forward)))
            self.monitor = Monitor(pl_module, opt, **kw)
            # the monitored optimizer's own steps: under manual optimisation trainer.global_step counts every
            # optimizer's steps (a GAN's generator stepping every n-th batch made the other batches "skipped")
            self._step_handle = opt.register_step_post_hook(CopyInert(self._after_step))
            self._opt_steps = self._last_opt_steps = 0
            if self._restored is not None:
                self.monitor.load_state_dict(self._restored)
                self._restored = None
            self._last_step = trainer.global_step
            self._losses, self._samples, self._forward_ran, self._window = [], 0, False, 0

        # the batch size when the LightningModule's own forward is not called (a training_step that calls
        # self.net(x)): the samples of the step's batches as Lightning counts them for logging
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._steps_in_batch = 0
            if self._handles:
                self._samples += _lightning_batch_size(batch) or 0

        def _after_step(self, optimizer, args, kwargs):
            self._opt_steps += 1
            self._steps_in_batch += 1
            if self._steps_in_batch == 2 and self._handles and not self._forward_ran and not self._warned_steps:
                self._warned_steps = True
                warnings.warn("LightningMonitorCallback: the monitored optimizer stepped more than once in one "
                              "training_step (manual optimisation), and the batch size the callback gives the monitor "
                              "is the whole batch's, so lr/B and C_sgd of these steps are off by the number of steps: "
                              "pass batch_size= (samples per optimizer step) to the callback", RuntimeWarning,
                              stacklevel=2)

        def _module_forward(self, module, args, output):
            if torch.is_grad_enabled():
                self._forward_ran = True

        def _hint(self):
            self.monitor.batch_size = None if self._forward_ran else (self._samples or None)

        def _before_step(self, optimizer, args, kwargs):
            # Lightning passes a closure that runs the training step: give the hint after it ran, before the
            # monitor (whose step pre-hook wraps this wrapper in turn) reads the gradients
            closure = kwargs.get("closure") if kwargs else None
            i0 = 1 if args and args[0] is optimizer else 0
            in_args = closure is None and len(args) > i0 and callable(args[i0])
            if in_args:
                closure = args[i0]
            if closure is None:
                self._hint()
                return None

            def wrapped():
                out = closure()
                self._hint()
                return out

            if in_args:
                return tuple(args[:i0]) + (wrapped,) + tuple(args[i0 + 1:]), kwargs
            return args, {**kwargs, "closure": wrapped}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
            if isinstance(loss, torch.Tensor) or isinstance(loss, (int, float)):
                if isinstance(loss, torch.Tensor):
                    loss = loss.detach()
                if pl_module.automatic_optimization:
                    loss = loss * trainer.accumulate_grad_batches  # Lightning divided it for the backward pass
                self._losses.append(loss)
            self._window += 1
            if trainer.global_step == self._last_step:
                return  # still accumulating: no optimizer step yet
            self._last_step = trainer.global_step
            k, n = trainer.accumulate_grad_batches, self._window
            self._window = 0
            if pl_module.automatic_optimization and n < k and not self._warned_window:
                self._warned_window = True
                warnings.warn(f"LightningMonitorCallback: the optimizer step at global step {trainer.global_step} "
                              f"closed a window of {n} micro-batch(es) with accumulate_grad_batches={k} (an epoch's "
                              f"last, shorter window): Lightning divided each loss by {k}, so that step applies {n}/{k} "
                              "of its samples' mean gradient, and its row describes that gradient (grad_sq_norm, "
                              f"tr_sigma, D and C_sgd scaled by ({n}/{k})^2; B_simple and C not)", RuntimeWarning,
                              stacklevel=2)
            if not pl_module.automatic_optimization:
                if self._opt_steps == self._last_opt_steps:
                    # another optimizer stepped (a GAN's other network), not the monitored one: its loss and samples
                    # are not this optimizer's either
                    self._losses = []
                    if self._handles:
                        self._samples, self._forward_ran = 0, False
                    return
                self._last_opt_steps = self._opt_steps
            loss, self._losses = _mean(self._losses), []
            row = self.monitor.step(loss)
            if self._handles:
                self._samples, self._forward_ran = 0, False
                self.monitor.batch_size = None
            if row and self.log:
                pl_module.log_dict(_numeric(row))

        def on_train_end(self, trainer, pl_module):
            for h in self._handles:
                h.remove()
            self._handles = []
            if self._step_handle is not None:
                self._step_handle.remove()
                self._step_handle = None
            if self.monitor is not None:
                try:  # a checkpoint saved after fit() (trainer.save_checkpoint) still holds the monitor's state
                    self._restored = self.monitor.state_dict()
                except RuntimeError:
                    self._restored = None
                self.monitor.close()

    _CLASSES["lightning"] = LightningMonitorCallback
    return LightningMonitorCallback


def _lightning_batch_size(batch) -> int | None:
    try:
        from lightning.pytorch.utilities.data import extract_batch_size
    except ImportError:  # pragma: no cover - the older package name
        from pytorch_lightning.utilities.data import extract_batch_size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its "ambiguous batch size" warning: the monitor states its own
            return int(extract_batch_size(batch))
    except Exception:  # noqa: BLE001 - no tensor in the batch: the monitor infers (or asks for batch_size=)
        return None


def lightning_callback(**monitor_kwargs):
    """A ``lightning.pytorch.Callback`` that runs a :class:`~hhld.torch.Monitor` on the LightningModule
    and its first optimizer, once per optimizer step, and logs each row with ``pl_module.log_dict``.

    ``monitor_kwargs`` go to the monitor. The monitor is available as ``callback.monitor``.
    """
    return _lightning_class()(**monitor_kwargs)


# ---------------------------------------------------------------------- Hugging Face transformers
_BATCH_KEYS = ("input_ids", "inputs_embeds", "pixel_values", "input_values", "input_features", "labels")


def _batch_len(args, kwargs) -> int | None:
    """Samples of one forward call, from the keyword tensors HF models take (else the first argument)."""
    for k in _BATCH_KEYS:
        v = kwargs.get(k)
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return int(v.shape[0])
    for v in list(args) + list(kwargs.values()):
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return int(v.shape[0])
    return None


def _unwrap_optimizer(opt):
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer`` (and similar wrappers)."""
    from .monitor import _unwrapped_optimizer

    return _unwrapped_optimizer(opt)


#: the monitor's state in a Hugging Face checkpoint folder
HF_STATE_FILE = "hhld_monitor.pt"


def _hf_checkpoint_file(args, state) -> str:
    """``output_dir/checkpoint-<global_step>/hhld_monitor.pt``: the Trainer's checkpoint folder of this step."""
    return os.path.join(args.output_dir, f"checkpoint-{state.global_step}", HF_STATE_FILE)


def _hf_class():
    if "hf" in _CLASSES:
        return _CLASSES["hf"]
    try:
        from transformers import TrainerCallback
    except ImportError as exc:
        raise ImportError("HFMonitorCallback needs transformers: pip install 'hhld[hf]'") from exc
    from .monitor import Monitor

    class HFMonitorCallback(TrainerCallback):
        """Runs a :class:`~hhld.torch.Monitor` once per optimizer step of a ``transformers.Trainer``."""

        def __init__(self, **monitor_kwargs):
            self.monitor_kwargs = monitor_kwargs
            self.monitor = None
            self._handle = None
            self._losses: list = []
            self._shares = False
            self._samples = 0

        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            if model is None or optimizer is None:
                raise ValueError("HFMonitorCallback needs the model and the optimizer from the Trainer "
                                 f"(got model={type(model).__name__}, optimizer={type(optimizer).__name__})")
            kw = dict(self.monitor_kwargs)
            scaler = getattr(optimizer, "scaler", None)
            if scaler is not None:
                kw.setdefault("scaler", scaler)
            self._count_batch = "batch_size" not in kw
            self.monitor = Monitor(model, _unwrap_optimizer(optimizer), **kw)
            self._handle = model.register_forward_hook(CopyInert(self._forward_hook), with_kwargs=True)
            if state.global_step:  # resumed (trainer.train(resume_from_checkpoint=...)): its monitor state, if saved
                path = _hf_checkpoint_file(args, state)
                if os.path.isfile(path):
                    self.monitor.load_state_dict(torch.load(path, weights_only=True))
                else:
                    warnings.warn(f"HFMonitorCallback: resumed at step {state.global_step} without the monitor's state "
                                  f"(no {path}): the monitor starts a new history", RuntimeWarning, stacklevel=2)

        def on_save(self, args, state, control, **kwargs):
            # beside the Trainer's own files in output_dir/checkpoint-<step>: plain data (torch.save of a dict of
            # Python values and tensors, read back with weights_only=True)
            if self.monitor is None or self.monitor.closed:
                return
            folder = os.path.dirname(_hf_checkpoint_file(args, state))
            if not os.path.isdir(folder):
                return
            try:
                sd = self.monitor.state_dict()
            except RuntimeError as exc:  # in the middle of an optimizer step: the checkpoint goes without it
                warnings.warn(f"HFMonitorCallback: checkpoint-{state.global_step} holds no monitor state ({exc}); a "
                              "run resumed from it starts a new monitor history", RuntimeWarning, stacklevel=2)
                return
            torch.save(sd, _hf_checkpoint_file(args, state))

        def _forward_hook(self, module, args, kwargs, output):
            if not (module.training and torch.is_grad_enabled()):
                return
            n = _batch_len(args, kwargs)
            if n and self._count_batch:
                # until the monitor reads keyword inputs itself: the samples of this optimizer step so far
                self._samples += n
                self.monitor.batch_size = self._samples
            loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
            if isinstance(loss, torch.Tensor):
                self._losses.append(loss.detach())
                self._shares = kwargs.get("num_items_in_batch") is not None
                if "accumulation" not in self.monitor_kwargs:
                    # each micro-batch loss is a share of the step's (divided by the step's count): a mean over all the
                    # step's samples also when the micro-batches differ in size (was: such a step left unmeasured)
                    self.monitor.accumulation = "shares" if self._shares else "mean"

        def on_step_end(self, args, state, control, **kwargs):
            if self.monitor is None:
                return
            losses, self._losses = self._losses, []
            if losses and self._shares:
                loss = torch.stack([v.reshape(()).float() for v in losses]).sum()  # shares of the step's loss
            else:
                loss = _mean(losses)
            self._samples = 0
            row = self.monitor.step(loss)
            if self._count_batch:
                self.monitor.batch_size = None
            if row:
                state.log_history.append({**_numeric(row), "step": state.global_step})

        def on_train_end(self, args, state, control, **kwargs):
            if self._handle is not None:
                self._handle.remove()
                self._handle = None
            if self.monitor is not None:
                self.monitor.close()

    _CLASSES["hf"] = HFMonitorCallback
    return HFMonitorCallback


def hf_callback(**monitor_kwargs):
    """``HFMonitorCallback(**monitor_kwargs)``: a ``transformers.TrainerCallback`` running the monitor."""
    return _hf_class()(**monitor_kwargs)


def __getattr__(name):
    # the classes subclass the frameworks' callback types: created on first use
    if name == "HFMonitorCallback":
        return _hf_class()
    if name == "LightningMonitorCallback":
        return _lightning_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
