"""Monitor: the cheap conv estimator, closures, bad input and the sinks (TensorBoard, Lightning, CSV/JSONL)."""
import json
import math
import warnings

import pytest
import torch
from torch import nn

from hhld import NonFiniteError
from hhld.torch import Monitor
from hhld.torch.persample import PerSampleSqNorms
from hhld.torch.quantities import Quantity

from test_monitor import data, tiny
from test_noise import reference
from workloads import OpaqueScale


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, stride=2), nn.Tanh(),
                         nn.Flatten(), nn.Linear(8 * 3 * 3, 2)).double()


def per_sample_sq(model, x, y, lf, which):
    """Brute-force per-sample squared gradient norms of the parameters ``which`` (float64)."""
    out = []
    for i in range(x.shape[0]):
        g = torch.autograd.grad(lf(model(x[i:i + 1]), y[i:i + 1]), which)
        out.append(sum(float((t ** 2).sum()) for t in g))
    return torch.tensor(out, dtype=torch.float64)


def sketch_draws(h, model, x, y, lf, n):
    """``n`` independent estimates of the per-sample norms from hooks ``h`` (one pass each)."""
    est = []
    with h:
        for _ in range(n):
            model.zero_grad()
            lf(model(x), y).backward()
            est.append(h.passes[-1])
            h.reset()
    return torch.stack(est)


# ------------------------------------------------------------------ conv sketch
def test_conv_sketch_is_unbiased_and_bias_only_exact():
    model, lf = small_cnn(), nn.CrossEntropyLoss(reduction="sum")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 2, (6,), generator=g)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    params = {f"{k}.{n}": p for k, m in enumerate(model) if isinstance(m, nn.Conv2d) for n, p in m.named_parameters()}
    ref = per_sample_sq(model, x, y, lf, list(params.values()))
    h = PerSampleSqNorms(model, params, conv_estimator="sketch", conv_probes=4)
    est = sketch_draws(h, model, x, y, lf, 150)
    assert {h.estimator[n] for n in params} == {"conv_sketch"} and len(convs) == 2
    # unbiased: the mean over 150 draws (4 probes each) is within a few standard errors of the exact norms
    mean, se = est.mean(0), est.std(0) / math.sqrt(est.shape[0])
    assert torch.all((mean - ref).abs() < 5 * se + 1e-12), (mean, ref, se)
    assert float((mean.sum() - ref.sum()).abs() / ref.sum()) < 0.05
    # a single draw: within the stated bound sqrt(2/k) per sample (generously: 4 sd)
    assert torch.all((est[0] - ref).abs() / ref < 4 * math.sqrt(2 / 4))
    # bias only (weights frozen): the bias term is exact
    bparams = {n: p for n, p in params.items() if n.endswith("bias")}
    refb = per_sample_sq(model, x, y, lf, list(bparams.values()))
    hb = PerSampleSqNorms(model, bparams, conv_estimator="sketch")
    model.zero_grad()  # the engine checks that the per-sample gradients sum to p.grad: start from zero
    with hb:
        lf(model(x), y).backward()
    assert torch.allclose(hb.passes[-1], refb, rtol=1e-9)


def _per_sample_conv_grads(model, x, y, lf, conv):
    """Per-sample (weight, bias) gradient of ``conv`` as a ``(q, p + 1)`` matrix per sample (float64)."""
    out = []
    for i in range(x.shape[0]):
        gw, gb = torch.autograd.grad(lf(model(x[i:i + 1]), y[i:i + 1]), [conv.weight, conv.bias])
        out.append(torch.cat([gw.reshape(gw.shape[0], -1), gb[:, None]], 1))
    return torch.stack(out)


@pytest.mark.parametrize("k", [1, 2])
def test_conv_sketch_variance_is_the_stated_one_with_independent_probes_per_sample(k):
    """The batch sum's variance is sum_i (2/k)(||A_i||_F^2 - sum_j (A_i)_jj^2), A_i = M_i^T M_i (independent
    probes per sample), below its bound (2/k) sum_i n_i^2; a probe set shared by the batch would give the
    much larger (2/k)(||S||_F^2 - sum_j S_jj^2), S = sum_i A_i."""
    model, lf = small_cnn(), nn.CrossEntropyLoss(reduction="sum")
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(12, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 2, (12,), generator=g)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    var_exact, var_bound, var_shared, total = 0.0, 0.0, 0.0, 0.0
    for c in convs:
        M = _per_sample_conv_grads(model, x, y, lf, c)
        A = M.transpose(1, 2) @ M
        n = A.diagonal(dim1=1, dim2=2).sum(1)
        var_exact += float(((A ** 2).sum((1, 2)) - (A.diagonal(dim1=1, dim2=2) ** 2).sum(1)).sum()) * 2 / k
        var_bound += float((n ** 2).sum()) * 2 / k
        S = A.sum(0)
        var_shared += float((S ** 2).sum() - (S.diagonal() ** 2).sum()) * 2 / k
        total += float(n.sum())
    params = {f"{i}.{n}": p for i, m in enumerate(model) if isinstance(m, nn.Conv2d) for n, p in m.named_parameters()}
    h = PerSampleSqNorms(model, params, conv_estimator="sketch", conv_probes=k, seed=5)
    est = sketch_draws(h, model, x, y, lf, 400).sum(1)
    assert var_exact <= var_bound and var_exact < 0.6 * var_shared  # the problem tells the two designs apart
    se_mean = math.sqrt(var_exact / len(est))
    assert abs(float(est.mean()) - total) < 4 * se_mean  # unbiased
    # the sample variance of 400 draws: within 30% of the exact variance (its relative s.e. here is ~7-12%)
    assert float(est.var()) == pytest.approx(var_exact, rel=0.3)


def test_conv1d_sketch_is_unbiased():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(3, 5, 3, padding=1), nn.Tanh(), nn.Conv1d(5, 4, 3, stride=2, dilation=2),
                          nn.Flatten(), nn.Linear(4 * 3, 2)).double()
    lf = nn.CrossEntropyLoss(reduction="sum")
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(5, 3, 10, generator=g, dtype=torch.float64), torch.randint(0, 2, (5,), generator=g)
    params = {f"{k}.{n}": p for k, m in enumerate(model) if isinstance(m, nn.Conv1d) for n, p in m.named_parameters()}
    ref = per_sample_sq(model, x, y, lf, list(params.values()))
    h = PerSampleSqNorms(model, params, conv_estimator="sketch", conv_probes=2)
    est = sketch_draws(h, model, x, y, lf, 200)
    mean, se = est.mean(0), est.std(0) / math.sqrt(est.shape[0])
    assert torch.all((mean - ref).abs() < 5 * se + 1e-12), (mean, ref, se)


def test_conv_estimator_choice_and_validation():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.big = nn.Conv2d(16, 32, 3)
            self.small = nn.Conv2d(2, 3, 1)

        def forward(self, x):
            return self.big(x).sum((1, 2, 3)) + self.small(x[:, :2]).sum((1, 2, 3))

    x = torch.randn(2, 16, 6, 6)
    for est, kinds in (("auto", {"big.weight": "conv_sketch", "small.weight": "conv"}),
                       ("exact", {"big.weight": "conv", "small.weight": "conv"})):  # exact is the default
        m = Two()
        h = PerSampleSqNorms(m, conv_estimator=est, conv_probes=2).attach()
        m(x).sum().backward()
        assert {n: h.estimator[n] for n in kinds} == kinds
    with pytest.raises(ValueError, match="conv_estimator"):
        PerSampleSqNorms(Two(), conv_estimator="fast")


def test_monitor_cnn_sketch_tr_sigma_matches_reference_on_average():
    model, lf = small_cnn(), nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 2, (16,), generator=g)
    tr, gu, gb = reference(model, lf, x, y)
    opt = torch.optim.SGD(model.parameters(), lr=1e-12)  # parameters ~ fixed: 20 draws of the same quantity
    mon = Monitor(model, opt, log_every=20, tier1_every=1, conv_estimator="sketch", conv_probes=2)
    for _ in range(20):
        opt.zero_grad(); lf(model(x), y).backward(); opt.step(); row = mon.step()
    assert "conv_sketch=4" in row["noise_estimator"] and row["noise_steps"] == 20
    assert row["grad_sq_norm"] == pytest.approx(gb, rel=1e-9)  # tier 0 stays exact
    assert row["tr_sigma"] == pytest.approx(tr, rel=0.05)
    mon.close()
    # the exact estimator on the same problem: exact
    mon = Monitor(model, opt, log_every=1, conv_estimator="exact")
    opt.zero_grad(); lf(model(x), y).backward(); opt.step(); row = mon.step()
    assert row["tr_sigma"] == pytest.approx(tr, rel=1e-6) and "conv=4" in row["noise_estimator"]
    mon.close()


# ------------------------------------------------------------------ closures / Lightning-style steps
def test_step_with_closure_reads_the_closures_gradients():
    x, y = data()
    lf = nn.CrossEntropyLoss()
    rows = []
    for use_closure in (False, True):
        model = tiny()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        mon = Monitor(model, opt, log_every=1, tier1_every=1)
        for _ in range(2):
            if use_closure:
                def closure():
                    opt.zero_grad()
                    loss = lf(model(x), y)
                    loss.backward()
                    return loss
                loss = opt.step(closure)
            else:
                opt.zero_grad(); loss = lf(model(x), y); loss.backward(); opt.step()
            rows.append(mon.step(loss))
        mon.close()
    for a, b in zip(rows[:2], rows[2:]):
        for k in ("grad_sq_norm", "tr_sigma", "update_norm", "loss"):
            assert b[k] == pytest.approx(a[k], rel=1e-12)


# ------------------------------------------------------------------ bad input
def test_no_trainable_parameters_and_foreign_optimizer():
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        Monitor(frozen, torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))
    with pytest.raises(ValueError, match=r"optimizer holds 2 parameter\(s\) that are not parameters of the model"):
        Monitor(nn.Linear(2, 2), torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1))
    # an optimizer over a subset is fine: only its parameters are monitored, the rest is listed
    model = tiny()
    mon = Monitor(model, torch.optim.SGD(model[2].parameters(), lr=0.1))
    assert mon.names == ["2.weight", "2.bias"] and mon.not_optimized == ["0.weight", "0.bias"]
    mon.close()


def test_nonfinite_gradient_warn_mode_records_event():
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1, on_nonfinite="warn")
    x, y = data()
    opt.zero_grad(); lf(model(x), y).backward()
    model[0].bias.grad[1] = float("inf")
    opt.step()
    with pytest.warns(RuntimeWarning, match="'0.bias' at step 0"):
        row = mon.step()
    assert not math.isfinite(row["grad_sq_norm"])  # stated, not silent
    assert any(e["event"] == "nonfinite_gradient" and e["parameter"] == "0.bias" for e in mon.events)


class NaNQuantity(Quantity):
    name = "nanq"

    def pre_step(self, ctx):
        return {"nanq": float("nan")}

    def finalize(self, ictx):
        return {"nanq": ictx.sums["nanq"] / ictx.counts["nanq"]}


def test_nan_in_a_finished_row_is_never_silent():
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    mon = Monitor(model, opt, log_every=1, extra_quantities=[NaNQuantity()])
    opt.zero_grad(); lf(model(x), y).backward(); opt.step()
    with pytest.raises(NonFiniteError, match="nanq"):
        mon.step()
    model2 = tiny()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05)
    mon2 = Monitor(model2, opt2, log_every=1, extra_quantities=[NaNQuantity()], on_nonfinite="warn")
    opt2.zero_grad(); lf(model2(x), y).backward(); opt2.step()
    with pytest.warns(RuntimeWarning, match="nanq"):
        mon2.step()
    assert any(e["event"] == "nonfinite_value" for e in mon2.events)


class WithBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4).double()
        self.bn = nn.BatchNorm1d(4).double()
        self.head = nn.Linear(4, 2).double()

    def forward(self, x):
        return self.head(torch.tanh(self.bn(self.lin(x))))


def test_batchnorm_couples_its_upstream_which_is_stated_not_silent():
    torch.manual_seed(0)
    model, lf = WithBN(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1)
    x, y = data(8)
    opt.zero_grad(); lf(model(x), y).backward(); opt.step()
    with pytest.warns(RuntimeWarning, match="cover 52.9% of the parameters' dimension"):
        row = mon.step()
    unc = mon.uncovered_parameters()
    # the Linear before the train-mode batch norm is coupled; the batch norm's own affine parameters are exact with
    # the batch statistics held fixed, and so is everything after it
    assert set(unc) == {"lin.weight", "lin.bias"} and "coupled: batch norm in training mode" in unc["lin.weight"]
    d_cov = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("lin"))
    assert row["noise_coverage"] == pytest.approx(d_cov / mon.dim)
    assert math.isfinite(row["tr_sigma"]) and "uncovered=2" in row["noise_estimator"]
    assert "batch_norm=2" in row["noise_estimator"]
    mon.close()


def test_probe_noise_gives_every_parameter_on_a_fixed_batch():
    """Coverage < 1 (train-mode batch norm): the scheduled probe gives exact statistics of every parameter
    (the coupled ones with the batch statistics held fixed), equal to gradient_noise_stats on that batch."""
    from hhld.torch import gradient_noise_stats

    torch.manual_seed(0)
    model, lf = WithBN(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = data(16, seed=9)
    with pytest.raises(ValueError, match="probe_every needs loss_fn= and hessian_batch="):
        Monitor(model, opt, probe_every=5)
    mon = Monitor(model, opt, log_every=1, loss_fn=lf, hessian_batch=probe, probe_every=1, tier2_every=1000)
    x, y = data(8)
    opt.zero_grad(); lf(model(x), y).backward(); opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the coverage warning (tested above)
        ref = gradient_noise_stats(model, lf, *probe, lr=0.05)  # the parameters the probe saw
        row = mon.step()
    assert row["probe_tr_sigma"] == pytest.approx(ref.tr_sigma, rel=1e-9)
    assert row["probe_D"] == pytest.approx(ref.D, rel=1e-9)
    assert "batch statistics held fixed=2" in row["probe_estimators"]
    assert row["noise_coverage"] < 1
    mon.close()


class OnlyOpaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.ones(3, dtype=torch.float64))

    def forward(self, x):
        return OpaqueScale.apply(x, self.s)


def test_no_parameter_covered_gives_a_note_not_nan():
    torch.manual_seed(0)
    model = OnlyOpaque()
    lf = nn.MSELoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1)
    x = torch.randn(8, 3, dtype=torch.float64)
    opt.zero_grad(); lf(model(x), x + 1).backward(); opt.step()
    row = mon.step()
    assert row["tr_sigma"] is None and row["noise_coverage"] == 0.0 and "no parameter is covered" in row["noise_note"]
    assert "no use seen in the model's forward" in mon.uncovered_parameters()["s"]
    assert not any(isinstance(v, float) and math.isnan(v) for v in row.values())
    mon.close()


# ------------------------------------------------------------------ sinks
def _train(mon, model, opt, steps=4):
    lf = nn.CrossEntropyLoss()
    for k in range(steps):
        x, y = data(8, seed=k)
        opt.zero_grad(); loss = lf(model(x), y); loss.backward(); opt.step(); mon.step(loss)
    mon.close()


def test_jsonl_csv_round_trip_with_nonfinite_and_new_columns(tmp_path):
    import pandas as pd

    from hhld.torch.sinks import CSVSink, JSONLSink
    js, cs = JSONLSink(tmp_path / "m.jsonl"), CSVSink(tmp_path / "m.csv")
    rows = [{"step": 0, "C": 1.5, "regime": "classical"}, {"step": 1, "C": float("inf"), "b_simple": float("nan")},
            {"step": 2, "C": 0.25, "tr_sigma": None}]
    for r in rows:
        js.write(r); cs.write(r)
    js.close(); cs.close()
    back = [json.loads(line) for line in open(tmp_path / "m.jsonl")]
    assert back[0] == rows[0] and back[1]["C"] == "inf" and back[1]["b_simple"] == "nan" and back[2]["tr_sigma"] is None
    df = pd.read_csv(tmp_path / "m.csv")
    assert list(df.columns) == ["step", "C", "regime", "b_simple", "tr_sigma"]  # union of the columns, in order
    assert df["C"].tolist()[0] == 1.5 and math.isinf(df["C"][1]) and math.isnan(df["b_simple"][1])
    # a monitor run: every history row is in both files
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=2, tier1_every=1,
                  sinks=[JSONLSink(tmp_path / "r.jsonl"), CSVSink(tmp_path / "r.csv")])
    _train(mon, model, opt)
    back = [json.loads(line) for line in open(tmp_path / "r.jsonl")]
    df = pd.read_csv(tmp_path / "r.csv")
    assert len(back) == len(df) == len(mon.history) == 2
    for b, h, (_, c) in zip(back, mon.history, df.iterrows()):
        for k in ("C_sgd", "tr_sigma", "grad_sq_norm", "loss"):
            assert b[k] == pytest.approx(h[k]) and c[k] == pytest.approx(h[k])
        assert b["regime"] == h["regime"] == c["regime"]


def test_tensorboard_sink(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install 'hhld[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hhld.torch.sinks import TensorBoardSink
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=2, sinks=[TensorBoardSink(tmp_path / "tb")])
    _train(mon, model, opt)
    ea = EventAccumulator(str(tmp_path / "tb"))
    ea.Reload()
    tags = ea.Tags()["scalars"]
    assert {"hhld/C_sgd", "hhld/tr_sigma", "hhld/loss", "hhld/grad_sq_norm"} <= set(tags)
    ev = ea.Scalars("hhld/C_sgd")
    assert [e.step for e in ev] == [h["step"] for h in mon.history]
    assert [e.value for e in ev] == pytest.approx([h["C_sgd"] for h in mon.history], rel=1e-6)
    assert "hhld/regime" in ea.Tags()["tensors"] or "hhld/regime/text_summary" in ea.Tags()["tensors"]


def test_lightning_callback():
    try:
        import lightning.pytorch as pl
    except ImportError:
        pl = pytest.importorskip("pytorch_lightning", reason="lightning not installed (pip install 'hhld[lightning]')")
    from hhld.torch.sinks import lightning_callback

    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = tiny()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    x, y = data(32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    cb = lightning_callback(log_every=2)
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Lit(), loader)
    mon = cb.monitor
    assert len(mon.history) == 2 and mon.history[0]["steps"] == 2 and mon.history[0]["skipped_steps"] == 0
    assert "hhld/C_sgd" in trainer.callback_metrics
    assert float(trainer.callback_metrics["hhld/C_sgd"]) == pytest.approx(mon.history[-1]["C_sgd"], rel=1e-5)
    # the rows hold the gradients of the closure Lightning runs inside optimizer.step (not stale ones)
    assert mon.history[0]["grad_sq_norm"] > 0 and mon.history[0]["noise_coverage"] == 1.0


def test_ddp_hook_is_exported():
    import hhld.torch as ht

    for name in ("DistributedNoiseStats", "DistributedNoiseEstimate", "register_noise_hook"):
        assert name in ht.__all__ and hasattr(ht, name)
