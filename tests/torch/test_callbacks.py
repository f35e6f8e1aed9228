"""The Lightning and Hugging Face Trainer callbacks end to end: one monitor step per optimizer step.

The runs are those of the workload matrix (``workloads.run_lightning`` / ``workloads.run_hf``): the
model's parameters before the checked optimizer step and its micro-batches are recorded, so the row can
be held against the float64 reference.
"""
import math
import sys

import pytest
import torch
from torch import nn

import workloads as W

MLP = W.Workload("mlp", "-", W._seeded(lambda: nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))),
                 W.feat_data, W.cls_loss, W.cls_per_sample, batch=8, reference="func", max_norm=0.05)
LIGHTNING = W.Practice("lightning", accum=2, clip=True, runner="lightning")


def _finite_row(row):
    bad = {k: v for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)}
    assert not bad, bad


@pytest.fixture(scope="module")
def lightning_run():
    pytest.importorskip("lightning", reason="lightning not installed (pip install 'hhld[lightning]')")
    return W.run_lightning(MLP, LIGHTNING, steps=3)


def test_lightning_one_row_per_optimizer_step(lightning_run):
    """accumulate_grad_batches=2, gradient_clip_val: 6 batches, 3 optimizer steps, 3 rows, nothing skipped."""
    rec = lightning_run
    assert rec.extra["global_step"] == 3
    assert len(rec.history) == 3
    assert all(r["steps"] == 1 and r["skipped_steps"] == 0 for r in rec.history)
    assert not [e for e in rec.events if e["event"] == "skipped_step"]
    # the step's loss is the mean of its micro-batch losses (Lightning's division by 2 undone)
    assert rec.row["loss"] == pytest.approx(sum(rec.extra["losses"]) / 2, rel=1e-6)
    assert rec.row["loss"] == pytest.approx(W.reference_loss(MLP, rec), rel=1e-5)
    # logged through pl_module.log_dict
    assert rec.extra["callback_metrics"]["hhld/C_sgd"] == pytest.approx(rec.row["C_sgd"], rel=1e-5)


def test_lightning_reads_the_clipped_gradient_of_both_micro_batches(lightning_run):
    """The monitor reads the gradient right after Lightning's closure (after clipping): |g|^2 and C_sgd of the
    gradient step() applied, with B = 8 (both micro-batches)."""
    rec = lightning_run
    ref = W.reference(MLP, rec)
    assert ref["clip_coef"] < 0.9  # clipping happened
    assert rec.row["grad_sq_norm"] == pytest.approx(ref["grad_sq_norm"], rel=1e-4)
    assert rec.row["C_sgd"] == pytest.approx(ref["C_sgd"], rel=1e-4)


def test_lightning_row_matches_the_reference(lightning_run):
    """Every row finite; every noise quantity of the checked step within 2% of the reference (clipped
    convention)."""
    rec = lightning_run
    for r in rec.history:
        _finite_row(r)
    ref = W.reference(MLP, rec)
    problems = W.compare(rec.row, ref, 0.02) + W.clip_problems(rec.row, ref["clip_coef"], 0.02)
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    pytest.importorskip("transformers", reason="transformers not installed (pip install 'hhld[hf]')")
    pytest.importorskip("accelerate", reason="accelerate not installed (pip install 'hhld[hf]')")
    return W.run_hf(3, str(tmp_path_factory.mktemp("hf")))


def test_hf_trainer_one_row_per_optimizer_step(hf_run):
    """gradient_accumulation_steps=2: 3 optimizer steps, 3 rows (also in the Trainer's log history), no
    skipped steps, the batch size counted from the keyword inputs, finite values."""
    rec = hf_run
    assert rec.extra["global_step"] == 3
    assert len(rec.history) == 3
    assert all(r["steps"] == 1 and r["skipped_steps"] == 0 for r in rec.history)
    assert not [e for e in rec.events if e["event"] == "skipped_step"]
    logged = [e for e in rec.extra["log_history"] if "hhld/C_sgd" in e]
    assert [e["step"] for e in logged] == [1, 2, 3]
    assert logged[-1]["hhld/C_sgd"] == pytest.approx(rec.row["C_sgd"])
    # the step's loss: the two micro-batches together, as the Trainer trains on them (its token-count
    # normalisation included)
    assert rec.row["loss"] == pytest.approx(W.reference_loss(rec.extra["workload"], rec), rel=1e-5)


def test_hf_trainer_rows_are_finite(hf_run):
    for r in hf_run.history:
        _finite_row(r)


def test_hf_trainer_gradient_and_batch_size(hf_run):
    """|g|^2 and C_sgd of the gradient step() applied (the Trainer clips at max_grad_norm=1), B = 8."""
    rec = hf_run
    ref = W.reference(rec.extra["workload"], rec)
    assert ref["B"] == 8
    assert rec.row["grad_sq_norm"] == pytest.approx(ref["grad_sq_norm"], rel=1e-4)
    assert rec.row["C_sgd"] == pytest.approx(ref["C_sgd"], rel=1e-4)


def test_sinks_alias_is_the_callbacks_function():
    from hhld.torch import callbacks, sinks

    assert sinks.lightning_callback is callbacks.lightning_callback


def test_missing_frameworks_name_the_extra(monkeypatch):
    from hhld.torch import callbacks

    monkeypatch.setattr(callbacks, "_CLASSES", {})
    for mod in ("transformers", "lightning", "lightning.pytorch", "pytorch_lightning"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ImportError, match=r"pip install 'hhld\[hf\]'"):
        callbacks.hf_callback()
    with pytest.raises(ImportError, match=r"pip install 'hhld\[hf\]'"):
        callbacks.HFMonitorCallback  # noqa: B018 - the lazy class
    with pytest.raises(ImportError, match=r"pip install 'hhld\[lightning\]'"):
        callbacks.lightning_callback()


def test_unwrap_optimizer():
    from hhld.torch.callbacks import _unwrap_optimizer

    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)

    class Wrapper(torch.optim.Optimizer):
        def __init__(self, inner):  # like accelerate's AcceleratedOptimizer: no Optimizer.__init__
            self.optimizer = inner

    assert _unwrap_optimizer(Wrapper(Wrapper(opt))) is opt
    assert _unwrap_optimizer(opt) is opt


def _small_lightning_module(momentum=0.0):
    """A LightningModule class: an MLP 6-16-3 (its training_step calls a submodule), SGD at lr 0.05."""
    import lightning.pytorch as pl

    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))

        def training_step(self, batch, idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=momentum)

    return Lit


def test_lightning_resumed_from_a_checkpoint_continues_the_monitor(tmp_path):
    """trainer.fit(..., ckpt_path=...) after a stop: the callback's monitor state travels in Lightning's checkpoint
    (callback state_dict, also from trainer.save_checkpoint after fit), and the resumed monitor continues it: the
    rows before the checkpoint kept, the step count and the rows' steps going on, the regime tracker where it was.
    (Which batches Lightning replays on resume is Lightning's: the values after it are not compared with an
    uninterrupted run; Monitor.state_dict's own test does that.)"""
    pytest.importorskip("lightning", reason="lightning not installed (pip install 'hhld[lightning]')")
    import lightning.pytorch as pl

    from hhld.torch.callbacks import lightning_callback

    Lit = _small_lightning_module(momentum=0.9)

    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g))

    def fit(max_steps, cb, ckpt=None, save=None):
        trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[cb])
        trainer.fit(Lit(), torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False), ckpt_path=ckpt)
        if save:
            trainer.save_checkpoint(save)
        return cb.monitor

    kw = dict(tier1_every=3, log_every=2, window=4, uncertainty_every=1, log=False)
    ck = str(tmp_path / "mid.ckpt")
    first = fit(4, lightning_callback(**kw), save=ck)  # 4 steps = one epoch of 4 batches
    cb = lightning_callback(**kw)
    got = fit(12, cb, ckpt=ck)
    assert len(first.history) == 2 and got.history[:2] == first.history
    assert [r["step"] for r in got.history] == [1, 3, 5, 7, 9, 11] and got.step_count == 12
    assert got.events[:len(first.events)] == first.events and first.regime.current is not None
    assert cb.state_dict()["monitor"]["step_count"] == 12  # after fit too


def test_hf_trainer_resumed_from_a_checkpoint_continues_the_monitor(tmp_path):
    """trainer.train(resume_from_checkpoint=...): the callback saved the monitor's state beside the Trainer's
    checkpoint (checkpoint-<step>/hhld_monitor.pt, plain data), and the resumed run's rows and events are those of
    the run that never stopped (the Trainer restores the data order and the generators)."""
    pytest.importorskip("transformers", reason="transformers not installed (pip install 'hhld[hf]')")
    pytest.importorskip("accelerate", reason="accelerate not installed (pip install 'hhld[hf]')")
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from hhld.torch.callbacks import HF_STATE_FILE, HFMonitorCallback

    def train(out, steps, resume=None):
        cb = HFMonitorCallback(tier1_every=3, log_every=2, window=4, uncertainty_every=1)
        args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=4, gradient_accumulation_steps=2,
                                 max_steps=steps, learning_rate=1e-3, lr_scheduler_type="constant", warmup_steps=0,
                                 logging_steps=1, save_strategy="steps", save_steps=3, report_to=[], use_cpu=True,
                                 seed=0, dataloader_drop_last=True, disable_tqdm=True)
        trainer = Trainer(model=W.hf_build(), args=args, train_dataset=W.hf_dataset(W.HF_WORKLOAD.batch * 6, 7),
                          callbacks=[cb])
        trainer.remove_callback(PrinterCallback)
        trainer.train(resume_from_checkpoint=resume)
        return cb.monitor

    ref = train(tmp_path / "ref", 6)
    train(tmp_path / "run", 3)
    ck = tmp_path / "run" / "checkpoint-3"
    assert (ck / HF_STATE_FILE).is_file()
    got = train(tmp_path / "run", 6, resume=str(ck))
    assert len(ref.history) == 3 and any(r.get("uncertainty_product") for r in ref.history)
    assert got.history == ref.history
    assert got.events == ref.events


def _lightning_fit(module, n, batch, callbacks, accumulate=1):
    import lightning.pytorch as pl

    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                         accumulate_grad_batches=accumulate)
    trainer.fit(module, torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=False))


def test_lightning_manual_optimisation_steps_the_monitor_only_with_its_optimizer():
    """A GAN-style LightningModule with two optimizers, the monitored one (first) stepping every 2nd batch:
    trainer.global_step counts both optimizers' steps, so every other batch was a spurious 'skipped_step' with the
    other network's loss (until 2026-12-02). One row per monitored step, no skipped steps, its own loss."""
    pytest.importorskip("lightning", reason="lightning not installed (pip install 'hhld[lightning]')")
    import lightning.pytorch as pl

    from hhld.torch.callbacks import lightning_callback

    class TwoOpt(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.automatic_optimization = False
            self.a, self.b = nn.Linear(6, 3), nn.Linear(6, 3)
            self.losses = []

        def training_step(self, batch, idx):
            x, y = batch
            opt_a, opt_b = self.optimizers()
            loss_b = nn.functional.cross_entropy(self.b(x), y)
            opt_b.zero_grad()
            self.manual_backward(loss_b)
            opt_b.step()
            if idx % 2 == 0:
                loss_a = nn.functional.cross_entropy(self.a(x), y)
                opt_a.zero_grad()
                self.manual_backward(loss_a)
                opt_a.step()
                self.losses.append(float(loss_a))
                return loss_a
            return None

        def configure_optimizers(self):
            return torch.optim.SGD(self.a.parameters(), lr=0.05), torch.optim.SGD(self.b.parameters(), lr=0.05)

    cb = lightning_callback(log_every=1, tier1_every=1, log=False)
    module = TwoOpt()
    with pytest.warns(RuntimeWarning, match="monitors the first of 2 optimizers"):
        _lightning_fit(module, 32, 4, [cb])
    hist = cb.monitor.history
    assert len(hist) == 4 and all(r["skipped_steps"] == 0 for r in hist)
    assert not [e for e in cb.monitor.events if e["event"] == "skipped_step"]
    assert [r["loss"] for r in hist] == pytest.approx(module.losses)
    assert all(r["noise_coverage"] == 1.0 for r in hist)


def test_lightning_a_shorter_last_accumulation_window_is_named():
    """accumulate_grad_batches=3 over 4 batches: the epoch's last window has 1 micro-batch, whose loss Lightning
    still divides by 3; that step applies 1/3 of its samples' mean gradient (the row describes it): one warning."""
    pytest.importorskip("lightning", reason="lightning not installed (pip install 'hhld[lightning]')")
    from hhld.torch.callbacks import lightning_callback

    Lit = _small_lightning_module()

    cb = lightning_callback(log_every=1, log=False)
    with pytest.warns(RuntimeWarning, match=r"closed a window of 1 micro-batch\(es\) with accumulate_grad_batches=3"):
        _lightning_fit(Lit(), 16, 4, [cb], accumulate=3)
    assert len(cb.monitor.history) == 2
