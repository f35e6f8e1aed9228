"""Monitor: every logged number against a float64 brute-force reference on tiny models."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hhld import NonFiniteError
from hhld.torch import Monitor
from hhld.torch.quantities import PhaseTransitionDetector, Quantity, RegimeTracker

from test_hessian import exact_hessian
from test_noise import reference


def tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).double()


def data(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (n,), generator=g)


def test_tier0_tier1_match_reference():
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    tr, gu, gb = reference(model, lf, x, y)  # before attaching: its backward passes would be counted
    mon = Monitor(model, opt, log_every=1)
    opt.zero_grad()
    loss = lf(model(x), y)
    loss.backward()
    opt.step()
    row = mon.step(loss)
    d = sum(p.numel() for p in model.parameters())
    assert row["loss"] == pytest.approx(float(loss.detach()))
    assert row["grad_sq_norm"] == pytest.approx(gb, rel=1e-9)
    assert row["C_sgd"] == pytest.approx(gb / (0.05 / 8), rel=1e-9)
    assert row["tr_sigma"] == pytest.approx(tr, rel=1e-9)
    assert row["grad_sq_norm_unbiased"] == pytest.approx(gu, rel=1e-9)
    D = 0.05 * tr / (2 * 8 * d)
    assert row["D"] == pytest.approx(D, rel=1e-9)
    if gu > 0:
        assert row["C_measured"] == pytest.approx(gu / (D * d), rel=1e-9)
        assert row["b_simple"] == pytest.approx(tr / gu, rel=1e-9)
    else:  # the unbiased |G|^2 estimate is <= 0 on this batch: undefined ratios are None, with the reason
        assert row["C_measured"] is None and row["b_simple"] is None
        assert "noise dominates" in row["noise_note"]
    assert row["C"] == pytest.approx(gb / (D * d), rel=1e-9)
    assert row["update_norm"] == pytest.approx(0.05 * math.sqrt(gb), rel=1e-9)  # plain SGD
    assert row["noise_coverage"] == 1.0 and row["regime"] is not None
    mon.close()


@pytest.mark.parametrize("tier1_every", [None, 1])
def test_forward_not_backpropagated_is_not_counted(tier1_every):
    """A forward with gradients enabled whose output is never backpropagated (e.g. a training-accuracy pass)
    is no part of the step: B, lr/B and C_sgd are those of the backpropagated batch alone."""
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    gb = reference(model, lf, x, y)[2]
    mon = Monitor(model, opt, log_every=1, tier1_every=tier1_every)
    opt.zero_grad()
    model(data(n=5, seed=3)[0]).argmax(1)  # an extra forward of 5 samples, never backpropagated
    lf(model(x), y).backward()
    opt.step()
    row = mon.step()
    assert row["C_sgd"] == pytest.approx(gb / (0.05 / 8), rel=1e-9)
    mon.close()


def test_ratio_of_means_not_mean_of_ratios():
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=3, tier1_every=None)
    gs, hb = [], []
    for k, bs in enumerate([4, 8, 16]):
        x, y = data(bs, seed=k)
        opt.zero_grad()
        loss = lf(model(x), y)
        loss.backward()
        gs.append(float(sum((p.grad ** 2).sum() for p in model.parameters())))
        hb.append(0.05 / bs)
        opt.step()
        row = mon.step(loss)
    assert row["C_sgd"] == pytest.approx(sum(gs) / sum(hb), rel=1e-9)


def _accumulated_step(model, lf, x, y, parts, scale=1.0, **kw):
    """One optimizer step accumulated over the micro-batches ``x[part]`` (each loss times ``scale``); its row."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1, **kw)
    opt.zero_grad()
    for h in parts:
        (lf(model(x[h]), y[h]) * scale).backward()
    opt.step()
    row = mon.step()
    mon.close()
    return row


def test_accumulation_matches_combined_batch():
    model, lf = tiny(), nn.CrossEntropyLoss()
    x, y = data(8)
    tr, gu, _ = reference(model, lf, x, y)
    row = _accumulated_step(model, lf, x, y, (slice(0, 4), slice(4, 8)), scale=0.5)
    assert row["tr_sigma"] == pytest.approx(tr, rel=1e-9)
    assert row["grad_sq_norm_unbiased"] == pytest.approx(gu, rel=1e-9)


def test_unequal_micro_batches_are_not_measured_and_say_why():
    """3 samples accumulated as 2 + 1 with mean losses weight the samples 1/4, 1/4, 1/2: no per-sample
    decomposition of a mean gradient; the row says so instead of a number. With sum losses it is measured."""
    x, y = data(3)
    with pytest.warns(RuntimeWarning, match=r"no per-sample statistics .*unequal sizes \[2, 1\]"):
        row = _accumulated_step(tiny(), nn.CrossEntropyLoss(), x, y, (slice(0, 2), slice(2, 3)), scale=0.5)
    assert row["tr_sigma"] is None and "unequal sizes [2, 1]" in row["noise_note"]
    assert row["grad_sq_norm"] > 0  # tier 0 is exact whatever the weighting

    model = tiny()
    tr, gu, _ = reference(model, nn.CrossEntropyLoss(), x, y)
    # summed losses weight every sample alike
    row = _accumulated_step(model, nn.CrossEntropyLoss(reduction="sum"), x, y, (slice(0, 2), slice(2, 3)),
                            loss_reduction="sum", accumulation="sum")
    assert row["tr_sigma"] == pytest.approx(tr, rel=1e-9)
    assert row["grad_sq_norm_unbiased"] == pytest.approx(gu, rel=1e-9)
    # each loss a share of the step's (summed, divided by the step's 3 samples: the Hugging Face Trainer's
    # num_items_in_batch): a mean over all three, measured (was: left out as unequal, with the wrong reason)
    row = _accumulated_step(tiny(), nn.CrossEntropyLoss(reduction="sum"), x, y, (slice(0, 2), slice(2, 3)),
                            scale=1 / 3, accumulation="shares")  # (the same initial parameters as the reference's)
    assert row["tr_sigma"] == pytest.approx(tr, rel=1e-9)
    assert row["grad_sq_norm_unbiased"] == pytest.approx(gu, rel=1e-9)


class RawScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.ones(3, dtype=torch.float64))
        self.lin = nn.Linear(3, 2).double()

    def forward(self, x):
        return self.lin(x * self.s)


def test_raw_parameter_is_covered_exactly_with_and_without_accumulation():
    torch.manual_seed(0)
    model, lf = RawScale(), nn.MSELoss()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    import copy
    twin = copy.deepcopy(model)  # reference computations on a copy (not hooked)
    tr_ref, gu_ref, _ = reference(twin, lf, x, y)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1, tier1_every=1)
    # the raw parameter s used as x * s: exact through the broadcast rule
    opt.zero_grad(); lf(model(x), y).backward(); opt.step()
    row = mon.step()
    assert row["noise_coverage"] == 1.0 and mon.uncovered_parameters() == {}
    assert row["tr_sigma"] == pytest.approx(tr_ref, rel=1e-9)
    assert "broadcast" in row["noise_estimator"]
    # two micro-batches pooled into one step: the same per-sample statistics of the 8 samples
    model.load_state_dict(twin.state_dict())
    opt.zero_grad()
    for h in (slice(0, 4), slice(4, 8)):
        (lf(model(x[h]), y[h]) / 2).backward()
    opt.step()
    row = mon.step()
    assert row["noise_coverage"] == 1.0
    assert row["tr_sigma"] == pytest.approx(tr_ref, rel=1e-9)
    assert row["grad_sq_norm_unbiased"] == pytest.approx(gu_ref, rel=1e-9)


def test_amp_scaler_unscaled_and_skipped_step():
    model, lf = tiny(), nn.CrossEntropyLoss()
    model = model.float()
    x, y = data(8)
    x = x.float()
    tr, _, _ = reference(model, lf, x.double(), y) if False else (None, None, None)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    ref_model = tiny().float()
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.05)
    ref = Monitor(ref_model, ref_opt, log_every=1)
    ref_opt.zero_grad(); lf(ref_model(x), y).backward(); ref_opt.step(); r0 = ref.step()
    mon = Monitor(model, opt, log_every=1, scaler=scaler)
    opt.zero_grad()
    scaler.scale(lf(model(x), y)).backward()
    scaler.step(opt)
    scaler.update()
    row = mon.step()
    assert row["tr_sigma"] == pytest.approx(r0["tr_sigma"], rel=1e-4)
    assert row["grad_sq_norm"] == pytest.approx(r0["grad_sq_norm"], rel=1e-4)
    # a non-finite step is skipped by the scaler and recorded, not turned into NaN
    opt.zero_grad()
    scaler.scale(lf(model(x), y) * float("inf")).backward()
    scaler.step(opt)
    scaler.update()
    row = mon.step()
    assert row["skipped_steps"] == 1
    assert any(e["event"] == "skipped_step" for e in mon.events)
    mon.close()
    # the scaler not given: its unscale_ reads as clipping by 1/1024 (the statistics stay right): one warning
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    mon = Monitor(model, opt, log_every=1)
    opt.zero_grad()
    scaler.scale(lf(model(x), y)).backward()
    with pytest.warns(RuntimeWarning, match=r"divided by 2\^10 .*pass Monitor\(\.\.\., scaler=scaler\)"):
        scaler.step(opt)
    scaler.update()
    mon.close()


@pytest.mark.parametrize("kw, steps, named", [
    (dict(log_every=2), 2, r"'2.weight' at step 1"),
    # tier 0 on steps 0 and 3 only: the NaN of step 1 reaches the parameters (plain SGD), so the next measured
    # step's gradient is NaN, and the row names that step
    (dict(log_every=6, tier1_every=None, window=None, tier0_every=3), 6, r"at step 3"),
], ids=["every_step", "tier0_every_3"])
def test_nonfinite_gradient_names_parameter_and_step(kw, steps, named):
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, **kw)
    x, y = data()
    for step in range(steps):
        opt.zero_grad()
        lf(model(x), y).backward()
        if step == 1:
            model[2].weight.grad[0, 0] = float("nan")
        opt.step()
        if step == steps - 1:
            with pytest.raises(NonFiniteError, match=named):
                mon.step()
        else:
            mon.step()


def test_bad_input_errors():
    m = nn.Linear(2, 2)
    m.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        Monitor(m, torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))
    with pytest.raises(ValueError, match="not parameters of the model"):
        Monitor(nn.Linear(2, 2), torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1))
    with pytest.raises(TypeError):
        Monitor(nn.Linear(2, 2), "sgd")
    with pytest.raises(ValueError, match="both loss_fn and hessian_batch"):
        m = nn.Linear(2, 2)
        Monitor(m, torch.optim.SGD(m.parameters(), lr=0.1), loss_fn=nn.MSELoss())


def test_tier2_against_exact_hessian():
    model, lf = tiny(), nn.MSELoss()
    x, _ = data(16)
    y = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    H = exact_hessian(model, lf, x, y)
    opt = torch.optim.SGD(model.parameters(), lr=1e-12)  # parameters ~ unchanged
    mon = Monitor(model, opt, log_every=1, tier1_every=1, loss_fn=lf, hessian_batch=(x, y), tier2_every=1, n_probes=64,
                  power_iters=30)
    rows = []
    for _ in range(3):
        opt.zero_grad()
        lf(model(x), y).backward()
        opt.step()
        rows.append(mon.step())
    row = rows[-1]
    ev = torch.linalg.eigvalsh(H)
    assert abs(row["hessian_trace"] - float(torch.trace(H))) < 4 * row["hessian_trace_se"]
    assert row["lambda_max"] == pytest.approx(float(ev[ev.abs().argmax()]), rel=1e-2)
    assert row["lr_stability_bound"] == pytest.approx(2 / row["lambda_max"])
    d = sum(p.numel() for p in model.parameters())
    assert row["eta_opt"] == pytest.approx(math.sqrt(row["D"] * row["hessian_trace"] / d), rel=1e-9)
    assert row["eta_opt_se"] > 0


def test_compile_smoke():
    model, lf = tiny().float(), nn.CrossEntropyLoss()
    try:
        cm = torch.compile(model, backend="aot_eager")
    except Exception as exc:  # pragma: no cover
        pytest.skip(f"torch.compile unavailable: {exc}")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ref = Monitor(model, opt, log_every=1)
    x, y = data()
    x = x.float()
    opt.zero_grad(); lf(model(x), y).backward(); opt.step(); r0 = ref.step()
    ref.close()
    model2 = tiny().float()
    cm = torch.compile(model2, backend="aot_eager")
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05)
    mon = Monitor(cm, opt2, log_every=1)
    opt2.zero_grad(); lf(cm(x), y).backward(); opt2.step(); row = mon.step()
    assert row["tr_sigma"] == pytest.approx(r0["tr_sigma"], rel=1e-4)


def test_regime_hysteresis_and_transitions():
    rt = RegimeTracker(patience=2)
    labels = [rt.update(c)[0] for c in [10, 10, 0.1, 10, 0.1, 0.1, 0.1]]
    assert labels == ["classical", "classical", "classical", "classical", "classical", "quantum", "quantum"]
    det = PhaseTransitionDetector(drop_factor=3, lookback=5)
    evs = [det.update(i, c) for i, c in enumerate([8, 9, 8.5, 2.0, 2.1])]
    assert evs[3] is not None and evs[3]["C_before"] == 9 and all(e is None for k, e in enumerate(evs) if k != 3)


def test_history_dataframe_and_uncertainty():
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=5, window=5, uncertainty_every=1)
    thetas, grads = [], []
    for k in range(5):
        x, y = data(8, seed=k)
        opt.zero_grad(); loss = lf(model(x), y); loss.backward()
        thetas.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone())
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
        opt.step(); mon.step(loss)
    mon.close()
    df = mon.to_dataframe()
    assert len(df) == 1 and {"loss", "C_sgd", "tr_sigma", "regime"} <= set(df.columns)
    T, G = torch.stack(thetas), torch.stack(grads)
    ref = math.sqrt(float(T.var(0).sum())) * math.sqrt(float(G.var(0).sum()))
    assert df["uncertainty_product"][0] == pytest.approx(ref, rel=1e-6)


def test_uncertainty_windows_one_after_another_each_exact():
    """Three windows in a row: each row's product is that of its own steps (nothing a window summed is carried
    into the next)."""
    model, lf = tiny().float(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=4, window=4, uncertainty_every=1, tier1_every=None)
    refs = []
    for w in range(3):
        thetas, grads = [], []
        for k in range(4):
            x, y = data(8, seed=4 * w + k)
            opt.zero_grad(); loss = lf(model(x.float()), y); loss.backward()
            thetas.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double())
            grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double())
            opt.step(); mon.step(loss)
        T, G = torch.stack(thetas), torch.stack(grads)
        refs.append(math.sqrt(float(T.var(0).sum())) * math.sqrt(float(G.var(0).sum())))
    got = [r["uncertainty_product"] for r in mon.history]
    assert got == pytest.approx(refs, rel=1e-4)
    assert len(set(round(r, 6) for r in refs)) == 3  # three different windows
    mon.close()


def test_uncertainty_window_variance_zero_within_rounding_and_never_clamped_beyond():
    """The window's variances: the exact value; a negative one within rounding is 0 (the gradients of a
    model that does not move, lr = 0, on one batch: the same every step); below zero by more than
    rounding the window is left out of its row with one warning (never clamped into a number); a NaN
    goes on to the monitor's non-finite check."""
    from hhld.torch.quantities import _VARIANCE_ROUNDING, _window_variance

    xs = torch.tensor([[1.0, 2.0], [3.0, 5.0], [2.0, 2.0]], dtype=torch.float64)
    ref = float(xs.var(0).sum())
    assert _window_variance((xs ** 2).sum(), xs.sum(0).square().sum(), 3) == pytest.approx(ref, rel=1e-12)
    sq = 30.0
    assert _window_variance(sq, 3 * 3 * sq / 3 * (1 + 0.5 * _VARIANCE_ROUNDING), 3) == 0.0
    assert _window_variance(sq, 3 * 3 * sq / 3 * (1 + 2 * _VARIANCE_ROUNDING), 3) is None
    assert math.isnan(_window_variance(float("nan"), 1.0, 3))
    assert _window_variance(sq, float("inf"), 3) is None  # an overflowed sum: not a variance (was sqrt(-inf))

    model, lf = tiny().float(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    mon = Monitor(model, opt, log_every=4, window=4, uncertainty_every=1, tier1_every=None)
    x, y = data(8, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: zero within rounding
        for _ in range(4):
            opt.zero_grad(); loss = lf(model(x.float()), y); loss.backward(); opt.step(); mon.step(loss)
    assert mon.history[-1]["uncertainty_product"] == 0.0
    win = next(q for q in mon.quantities if q.name == "uncertainty")
    for k in range(8):
        x, y = data(8, seed=k)
        opt.zero_grad(); loss = lf(model(x.float()), y); loss.backward()
        if k in (3, 7):  # the window's last sample (taken when the optimizer steps)
            win._sq_g = -1e6  # sums that are not those of a variance
            with warnings.catch_warnings(record=True) as rec:
                warnings.simplefilter("always")
                opt.step()
            assert [("variance below zero" in str(w.message)) for w in rec] == ([True] if k == 3 else [])
        else:
            opt.step()
        mon.step(loss)
    assert mon.history[-1].get("uncertainty_product") is None and mon.history[-2].get("uncertainty_product") is None
    mon.close()


def test_uncertainty_window_sampled_every_k_steps():
    """window=6 steps sampled every 2: the variances over steps 0, 2, 4 (float32 model: the
    parameters are taken relative to the first sample, no cancellation)."""
    model, lf = tiny().float(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=6, window=6, uncertainty_every=2)
    thetas, grads = [], []
    for k in range(6):
        x, y = data(8, seed=k)
        opt.zero_grad(); loss = lf(model(x.float()), y); loss.backward()
        if k % 2 == 0:
            thetas.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double())
            grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double())
        opt.step(); mon.step(loss)
    T, G = torch.stack(thetas), torch.stack(grads)
    ref = math.sqrt(float(T.var(0).sum())) * math.sqrt(float(G.var(0).sum()))
    assert mon.history[-1]["uncertainty_product"] == pytest.approx(ref, rel=1e-4)
    with pytest.raises(ValueError, match="at least 2 samples"):
        Monitor(model, opt, window=4, uncertainty_every=3)
    mon.close()
    off = Monitor(model, opt, window=None)
    assert not any(q.name == "uncertainty" for q in off.quantities)
    off.close()


def test_jsonl_and_csv_sinks(tmp_path):
    import json

    from hhld.torch.sinks import CSVSink, JSONLSink
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=2, sinks=[JSONLSink(tmp_path / "m.jsonl"), CSVSink(tmp_path / "m.csv")])
    for k in range(4):
        x, y = data(8, seed=k)
        opt.zero_grad(); loss = lf(model(x), y); loss.backward(); opt.step(); mon.step(loss)
    mon.close()
    rows = [json.loads(line) for line in open(tmp_path / "m.jsonl")]
    assert len(rows) == 2 and rows[1]["C_sgd"] == pytest.approx(mon.history[1]["C_sgd"])
    import pandas as pd
    assert len(pd.read_csv(tmp_path / "m.csv")) == 2


@pytest.mark.parametrize("scale", [1e-25, 1e20])
def test_tiny_and_huge_loss_scales_give_the_scaled_statistics(scale):
    """float32 model, loss x 1e-25 or 1e20 with finite gradients: every statistic is the unscaled one times
    scale^2 (or unchanged for ratios), never negative, never a false non-finite report."""
    rows = []
    for s in (1.0, scale):
        torch.manual_seed(0)
        model, lf = tiny().float(), nn.CrossEntropyLoss()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        mon = Monitor(model, opt, log_every=1, tier1_every=1)
        x, y = data()
        opt.zero_grad()
        (s * lf(model(x.float()), y)).backward()
        opt.step()
        rows.append(mon.step())
        mon.close()
    base, big = rows
    for k in ("grad_sq_norm", "tr_sigma", "grad_sq_norm_unbiased"):
        assert big[k] == pytest.approx(base[k] * scale ** 2, rel=1e-5), k
    assert big["tr_sigma"] > 0 and big["noise_coverage"] == 1.0
    for k in ("b_simple", "C_measured"):
        assert (big[k] is None) == (base[k] is None) and (big[k] is None or big[k] == pytest.approx(base[k], rel=1e-4))


class InfQuantity(Quantity):
    name = "infq"

    def pre_step(self, ctx):
        return {"infq": float("inf")}

    def finalize(self, ictx):
        return {"infq": ictx.sums["infq"]}


def test_inf_from_a_quantity_is_flagged_like_nan():
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1, extra_quantities=[InfQuantity()])
    x, y = data()
    opt.zero_grad(); lf(model(x), y).backward(); opt.step()
    with pytest.raises(NonFiniteError, match="infq"):
        mon.step()


def test_former_finalize_signature_still_works_with_a_deprecation_warning():
    class Old(Quantity):
        name = "old"

        def pre_step(self, ctx):
            return {"old_n": 1.0}

        def finalize(self, sums, counts, monitor):  # the former signature
            return {"old_steps": sums["old_n"], "old_dim": monitor.dim}

    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=2, tier1_every=None, extra_quantities=[Old()])
    x, y = data()
    rows = []
    with pytest.warns(DeprecationWarning, match="former signature"):
        for _ in range(4):
            opt.zero_grad(); lf(model(x), y).backward(); opt.step()
            rows.append(mon.step())
    assert [r["old_steps"] for r in rows if r] == [2.0, 2.0]
    assert rows[1]["old_dim"] == sum(p.numel() for p in model.parameters())
    mon.close()


@pytest.mark.parametrize("extra", ["grad_wrt_output", "grad_wrt_input", "grad_of_another_function",
                                   "forward_only_for_a_saliency_map"])
def test_torch_autograd_grad_calls_in_the_step_change_nothing(extra):
    """``torch.autograd.grad`` calls (a saliency map, a logged input gradient) run the same hooks as the backward
    pass but write no ``.grad``: the row is that of the backward pass alone, exact."""
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    tr, gu, gb = reference(model, lf, x, y)
    mon = Monitor(model, opt, log_every=1, tier1_every=1)
    opt.zero_grad()
    xr = x.clone().requires_grad_(True)
    out = model(xr)
    loss = lf(out, y)
    if extra == "grad_wrt_output":
        torch.autograd.grad(loss, out, retain_graph=True)
    elif extra == "grad_wrt_input":
        torch.autograd.grad(loss, xr, retain_graph=True)
    elif extra == "grad_of_another_function":
        torch.autograd.grad(out[:, 0].sum(), xr, retain_graph=True)
    else:  # another batch's forward, differentiated with respect to its input only
        xv = data(n=5, seed=4)[0].requires_grad_(True)
        torch.autograd.grad(model(xv).sum(), xv)
    loss.backward()
    opt.step()
    row = mon.step(loss)
    assert row["C_sgd"] == pytest.approx(gb / (0.05 / 8), rel=1e-9)
    assert row["tr_sigma"] == pytest.approx(tr, rel=1e-9) and row["noise_coverage"] == 1.0
    mon.close()


def test_create_graph_step_is_counted_once_and_not_measured_with_the_reason():
    """A gradient penalty: ``autograd.grad(..., create_graph=True)`` then ``backward()``. The forward is counted
    once (B = 8, not 16); the per-sample statistics are not measured (second-order terms), and say why; the next
    step without the penalty is measured again."""
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    mon = Monitor(model, opt, log_every=1, tier1_every=1)
    opt.zero_grad()
    xr = x.clone().requires_grad_(True)
    ce = nn.functional.cross_entropy(model(xr), y, reduction="none")
    (gx,) = torch.autograd.grad(ce.sum(), xr, create_graph=True)
    (ce + 0.5 * (gx ** 2).sum(1)).mean().backward()
    gb = sum(float((p.grad ** 2).sum()) for p in model.parameters())
    opt.step()
    with pytest.warns(RuntimeWarning, match="create_graph=True"):
        row = mon.step()
    assert row["C_sgd"] == pytest.approx(gb / (0.05 / 8), rel=1e-9)
    assert row["tr_sigma"] is None and "create_graph=True" in row["noise_note"]
    tr = reference(model, lf, x, y)[0]
    opt.zero_grad()
    lf(model(x), y).backward()
    opt.step()
    row = mon.step()
    assert row["tr_sigma"] == pytest.approx(tr, rel=1e-9)
    mon.close()


@pytest.mark.parametrize("told, loss_of, warns", [
    ("mean", lambda out, y: nn.functional.cross_entropy(out, y, reduction="sum"), "sum"),
    ("mean", lambda out, y: nn.functional.cross_entropy(out, y, reduction="none").sum(), "sum"),
    ("sum", lambda out, y: nn.functional.cross_entropy(out, y), "mean"),
    ("sum", lambda out, y: nn.functional.cross_entropy(out, y, reduction="none").mean(), "mean"),
    ("mean", lambda out, y: nn.functional.cross_entropy(out, y), None),
    ("sum", lambda out, y: nn.functional.cross_entropy(out, y, reduction="sum"), None),
    ("mean", lambda out, y: nn.functional.cross_entropy(out, y, reduction="sum") / 8, None),  # unknown: silent
    ("mean", lambda out, y: torch.stack([nn.functional.cross_entropy(out, y), out.pow(2).mean()]).sum(), None),
])
def test_a_loss_reduced_otherwise_than_declared_gives_one_warning(told, loss_of, warns):
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = data()
    mon = Monitor(model, opt, log_every=1, tier1_every=1, loss_reduction=told)
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        for _ in range(2):
            opt.zero_grad()
            loss = loss_of(model(x), y)
            loss.backward()
            opt.step()
            mon.step(loss)
    msgs = [str(w.message) for w in ws if "looks like a" in str(w.message)]
    if warns is None:
        assert msgs == []
    else:
        assert len(msgs) == 1 and f"looks like a {warns} over the batch" in msgs[0]
        assert f"loss_reduction={warns!r}" in msgs[0] and "B^2 = 64" in msgs[0]
    mon.close()


def _two_views(model, x, y):
    """A consistency objective over two views of the same samples, one backward pass through both forwards."""
    o1, o2 = model(x), model(x * 0.9)
    return nn.functional.cross_entropy(o1, y) + nn.functional.cross_entropy(o2, y) + nn.functional.mse_loss(o1, o2)


def test_two_views_in_one_backward_warn_and_batch_size_makes_them_exact():
    model = tiny()
    x, y = data()
    ps = list(model.parameters())
    G = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(_two_views(model, x[i:i + 1], y[i:i + 1]),
                                                                           ps)]) for i in range(8)])
    tr = float(((G - G.mean(0)) ** 2).sum() / 7)
    gb = float((G.mean(0) ** 2).sum())
    for batch_size in (None, 8):
        m = tiny()
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        mon = Monitor(m, opt, log_every=1, tier1_every=1, batch_size=batch_size)
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter("always")
            opt.zero_grad()
            _two_views(m, x, y).backward()
            opt.step()
            row = mon.step()
        views = [str(w.message) for w in ws if "views of the same samples" in str(w.message)]
        if batch_size is None:  # counted as 16 different samples: said, and not measured at tier 1
            assert len(views) == 2 and "2 forwards" in views[0] and "pass batch_size=8" in row["noise_note"]
            assert row["C_sgd"] == pytest.approx(gb / (0.05 / 16), rel=1e-9) and row["tr_sigma"] is None
        else:
            assert views == []
            assert row["C_sgd"] == pytest.approx(gb / (0.05 / 8), rel=1e-9)
            assert row["tr_sigma"] == pytest.approx(tr, rel=1e-9)
        mon.close()


@pytest.mark.parametrize("swap", [False, True])
def test_model_moved_after_the_monitor_was_made(swap):
    """``model.to(...)`` after ``Monitor(model, opt)`` (the optimizer keeps the same parameters; torch gives them
    new data, or swaps them): every forward is still counted and the row is exact."""
    model, lf = tiny().float(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1, tier1_every=1)
    old = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(swap)
    try:
        model.to(torch.float64)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(old)
    x, y = data()
    tr, _, gb = reference(model, lf, x, y)
    opt.zero_grad()
    lf(model(x), y).backward()
    opt.step()
    row = mon.step()
    assert row["C_sgd"] == pytest.approx(gb / (0.05 / 8), rel=1e-9)
    assert row["tr_sigma"] == pytest.approx(tr, rel=1e-9)
    mon.close()


def test_a_packed_sequence_as_the_model_input():
    """``model(pack_padded_sequence(x, lengths, enforce_sorted=False))``: B is the packed batch's (not its number
    of rows), every parameter covered, and tr_sigma that of per-sample autograd."""
    from torch.nn.utils.rnn import pack_padded_sequence

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.fc = nn.LSTM(4, 8, batch_first=True), nn.Linear(8, 3)

        def forward(self, p):
            return self.fc(self.rnn(p)[1][0][-1])

    torch.manual_seed(0)
    model = M()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1, tier1_every=1)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        x, y = torch.randn(8, 6, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
        p = pack_padded_sequence(x, torch.randint(1, 7, (8,), generator=g), batch_first=True, enforce_sorted=False)
        opt.zero_grad()
        loss = F.cross_entropy(model(p), y)
        loss.backward()
        losses = F.cross_entropy(model(p), y, reduction="none")
        G = torch.stack([torch.cat([t.reshape(-1) for t in torch.autograd.grad(losses[i], list(model.parameters()),
                                                                                retain_graph=True)])
                         for i in range(8)]).double()
        opt.step()
        row = mon.step(loss)
    tr = 8 / 7 * (float((G ** 2).sum(1).mean()) - float((G.mean(0) ** 2).sum()))
    assert row["noise_coverage"] == 1.0
    assert row["tr_sigma"] == pytest.approx(tr, rel=1e-4)
    assert row["C_sgd"] == pytest.approx(float((G.mean(0) ** 2).sum()) / (0.05 / 8), rel=1e-4)
    mon.close()


def _per_sample(model, x, y):
    losses = F.cross_entropy(model(x), y, reduction="none")
    G = torch.stack([torch.cat([t.reshape(-1) for t in torch.autograd.grad(losses[i], list(model.parameters()),
                                                                            retain_graph=True)])
                     for i in range(len(y))]).double()
    B = len(y)
    return B / (B - 1) * (float((G ** 2).sum(1).mean()) - float((G.mean(0) ** 2).sum())), float((G.mean(0) ** 2).sum())


@pytest.mark.parametrize("to_none", [True, False])
def test_sharpness_aware_minimization_describes_the_applied_gradient(to_none):
    """SAM: backward at w, zero_grad, backward at the perturbed w + e, restore w, step. The row describes the
    gradient step() applies (the second pass's); the first pass leaves the row (it used to make the sum check
    fail: coverage 0). Also with ``zero_grad(set_to_none=False)``, which zeroes the gradients in place: until
    2026-12-02 the first pass then stayed in the step (B 16 instead of 8, C_sgd 2x, tr Sigma off until the sum
    check left every parameter uncovered). A wrapper optimizer whose own step() never runs is said, with what to
    do."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1, tier1_every=1)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad(set_to_none=to_none)
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            gn = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
            eps = [0.05 * p.grad / gn for p in model.parameters()]
            for p, e in zip(model.parameters(), eps):
                p.add_(e)
        opt.zero_grad(set_to_none=to_none)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        tr, gsq = _per_sample(model, x, y)
        with torch.no_grad():
            for p, e in zip(model.parameters(), eps):
                p.sub_(e)
        opt.step()
        row = mon.step(loss)
    assert row["noise_coverage"] == 1.0
    assert row["tr_sigma"] == pytest.approx(tr, rel=1e-4)
    assert row["grad_sq_norm"] == pytest.approx(gsq, rel=1e-4)
    assert row["C_sgd"] == pytest.approx(gsq / (0.05 / 8), rel=1e-4)
    mon.close()

    class Wrapper(torch.optim.Optimizer):  # SAM's usual shape: base_optimizer.step() in second_step()
        def __init__(self, params, **kw):
            super().__init__(params, kw)
            self.base = torch.optim.SGD(self.param_groups, **kw)

    wrapped = Wrapper(model.parameters(), lr=0.05)
    mon = Monitor(model, wrapped, log_every=1)
    F.cross_entropy(model(x), y).backward()
    wrapped.base.step()
    with pytest.warns(RuntimeWarning, match="took no step.*give that one to Monitor"):
        mon.step()
    assert mon.events[-1]["event"] == "skipped_step"
    mon.close()


def test_lbfgs_is_refused_with_the_reason():
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="LBFGS.*closure several times"):
        Monitor(model, torch.optim.LBFGS(model.parameters()))


def test_progressive_unfreezing():
    """An optimizer built over every parameter while some are frozen (transfer learning), the first layer unfrozen
    at step 2 and the head frozen at step 4: each row describes the trainable parameters of its step (d counts
    them), against per-sample autograd. It used to refuse the optimizer at construction."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    model[0].requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1, tier1_every=1)
    g = torch.Generator().manual_seed(1)
    for step in range(6):
        if step == 2:
            model[0].requires_grad_(True)
        if step == 4:
            model[2].requires_grad_(False)
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        live = [p for p in model.parameters() if p.requires_grad]
        losses = F.cross_entropy(model(x), y, reduction="none")
        G = torch.stack([torch.cat([t.reshape(-1) for t in torch.autograd.grad(losses[i], live, retain_graph=True)])
                         for i in range(8)]).double()
        tr = 8 / 7 * (float((G ** 2).sum(1).mean()) - float((G.mean(0) ** 2).sum()))
        d = sum(p.numel() for p in live)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        row = mon.step(loss)
        assert row["noise_coverage"] == 1.0, step
        assert row["tr_sigma"] == pytest.approx(tr, rel=1e-4), step
        assert row["D"] == pytest.approx(0.05 * tr / (2 * 8 * d), rel=1e-4), step
    mon.close()


@pytest.mark.parametrize("accum,amp", [(1, False), (2, False), (2, True)])
def test_a_regulariser_in_the_loss(accum, amp):
    """``loss = ce + lam * (sum |p|^2 + |W0|_1)`` computed in the loop from the parameters alone: every sample's
    gradient holds the regulariser's gradient; tr_sigma and the unbiased |G|^2 against per-sample autograd of
    ``ce_i + reg`` (was: every parameter failed the sum check, coverage 0). With accumulation (the regulariser in
    each micro-batch's loss, divided by their number) and under a GradScaler; the second step is one between sum
    checks (the engine's cheap Linear path is not taken for such a parameter, which needs its factors' sum)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0) if amp else None
    mon = Monitor(model, opt, log_every=1, tier1_every=1, scaler=scaler)
    lam = 1e-2

    def reg():
        return lam * sum(p.pow(2).sum() for p in model.parameters()) + lam * model[0].weight.abs().sum()

    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        losses = F.cross_entropy(model(x), y, reduction="none") + reg()
        G = torch.stack([torch.cat([t.reshape(-1) for t in torch.autograd.grad(losses[i], list(model.parameters()),
                                                                                retain_graph=True)])
                         for i in range(8)]).double()
        tr = 8 / 7 * (float((G ** 2).sum(1).mean()) - float((G.mean(0) ** 2).sum()))
        opt.zero_grad()
        for xi, yi in zip(x.chunk(accum), y.chunk(accum)):
            loss = (F.cross_entropy(model(xi), yi) + reg()) / accum
            (scaler.scale(loss) if amp else loss).backward()
        if amp:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        row = mon.step(loss)
    assert row["noise_coverage"] == 1.0
    assert row["tr_sigma"] == pytest.approx(tr, rel=1e-4)
    assert row["grad_sq_norm_unbiased"] == pytest.approx(float((G.mean(0) ** 2).sum()) - tr / 8, rel=1e-3)
    mon.close()


def test_a_parameter_used_with_batched_data_outside_the_forward_stays_uncovered():
    """The negative of the regulariser: ``loss = ce + (x @ W0.T).pow(2).mean()`` uses a parameter with the batch
    after the forward, a per-sample term the engine does not see: that parameter is left out, with the reason."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1, tier1_every=1, coverage_warning=False)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y) + (x @ model[0].weight.T).pow(2).mean()
    loss.backward()
    opt.step()
    row = mon.step(loss)
    unc = mon.uncovered_parameters()
    assert set(unc) == {"0.weight"} and "sum to something else" in unc["0.weight"]
    assert row["noise_coverage"] == pytest.approx(1 - 96 / 163)
    mon.close()


def test_clipping_per_parameter_group():
    """``clip_grad_norm_`` on the body and on the head separately rescales each group by its own factor: the row
    describes the applied gradient, whose per-sample gradients are the backward ones rescaled alike (found by
    each parameter's L1 and L2 norms changing by one factor), against per-sample autograd. It used to leave the
    step unmeasured; ``clip_grad_value_`` (not a rescaling) still does, with the reason."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1, tier1_every=1)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
    losses = F.cross_entropy(model(x), y, reduction="none")
    G = torch.stack([torch.cat([t.reshape(-1) for t in torch.autograd.grad(losses[i], list(model.parameters()),
                                                                            retain_graph=True)])
                     for i in range(8)]).double()
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    factors = []
    for part, max_norm in ((model[0], 0.05), (model[2], 0.3)):
        norm = float(torch.nn.utils.clip_grad_norm_(part.parameters(), max_norm))
        factors += [min(1.0, max_norm / (norm + 1e-6))] * sum(p.numel() for p in part.parameters())
    assert max(factors) < 1.0 and min(factors) != max(factors)
    Gs = G * torch.tensor(factors, dtype=torch.float64)
    opt.step()
    row = mon.step(loss)
    assert row["tr_sigma"] == pytest.approx(8 / 7 * (float((Gs ** 2).sum(1).mean()) - float((Gs.mean(0) ** 2).sum())),
                                            rel=1e-5)
    assert row["noise_coverage"] == 1.0
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_value_(model.parameters(), 0.01)
    opt.step()
    with pytest.warns(RuntimeWarning, match="clip_grad_value_"):
        row = mon.step(loss)
    assert row["tr_sigma"] is None and "no per-sample decomposition" in row["noise_note"]
    mon.close()


def test_l1_norms_match_float64_sums_at_every_scale():
    """The clipping test's L1 norms (float32 sums, float64 where they leave [1e-18, 1e18]) against float64 sums."""
    from hhld.torch.monitor import _l1_norms

    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(256, 784, generator=g), torch.randn(300, generator=g) * 1e-25,
          torch.randn(50, generator=g) * 1e30, torch.zeros(7), torch.randn(64, generator=g).to(torch.bfloat16),
          torch.randn(8, 8, dtype=torch.float64, generator=g), torch.randn(6, 4, generator=g).to_sparse(),
          torch.full((300,), -1e37)]  # its float32 sum overflows: redone in float64
    got = _l1_norms(ts)
    ref = [float((t.to_dense() if t.is_sparse else t).double().abs().sum()) for t in ts]
    assert got[3] == 0.0 and got[-1] == pytest.approx(3e39, rel=1e-6)
    for a, b in zip(got, ref):
        assert a == pytest.approx(b, rel=1e-6, abs=0.0)
    assert _l1_norms([]) == []


def _exact_grad_sq_recorder(model, store):
    def pre(opt, args, kwargs):
        store.append(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters()))
    return pre


@pytest.mark.parametrize("tier0_every", [1, 3, 4])
def test_tier0_every_measures_every_kth_step_and_each_rows_last(tier0_every):
    """tier0_every=k: the row's ||g||^2 and C_sgd are the means over steps 0, k, 2k, ... of the interval and its
    last step (the update norm's sample), exactly; grad_sq_steps says how many; the loss is every step's. (No
    other quantity here: tier 1 and the window would add their steps.)"""
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    exact = []
    opt.register_step_pre_hook(_exact_grad_sq_recorder(model, exact))
    log_every = 10
    mon = Monitor(model, opt, log_every=log_every, tier1_every=None, window=None, tier0_every=tier0_every)
    losses, rows = [], []
    for s in range(2 * log_every):
        x, y = data(seed=s)
        opt.zero_grad()
        loss = lf(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        row = mon.step(loss)
        if row is not None:
            rows.append(row)
    assert len(rows) == 2
    for r, row in enumerate(rows):
        steps = [s for s in range(r * log_every, (r + 1) * log_every)
                 if s % tier0_every == 0 or (s + 1) % log_every == 0]
        assert row["grad_sq_steps"] == len(steps)
        g = sum(exact[s] for s in steps) / len(steps)
        assert row["grad_sq_norm"] == pytest.approx(g, rel=1e-12)
        assert row["C_sgd"] == pytest.approx(g / (0.05 / 8), rel=1e-12)
        assert row["loss"] == pytest.approx(sum(losses[r * log_every:(r + 1) * log_every]) / log_every, rel=1e-12)
        assert row["steps"] == log_every and row["update_norm"] is not None
    mon.close()


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, None])
def test_tier0_every_bad_values_are_refused(bad):
    m = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=f"tier0_every must be an integer >= 1.*got {bad!r}"):
        Monitor(m, torch.optim.SGD(m.parameters(), lr=0.1), tier0_every=bad)


def test_tier0_every_a_tier1_step_is_measured_whatever_tier0_every_says():
    """tier1_every=5 with tier0_every=4: the tier-1 steps (0, 5) are measured on their own schedule, with the exact
    per-sample numbers, and their ||g||^2 enters the row's mean with tier 0's steps (0, 4, 8)."""
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=5, tier1_every=5, window=None, tier0_every=4, track_update=False)
    for s in range(10):
        x, y = data(seed=s)
        if s == 5:
            tr, gu, gb = reference(model, lf, x, y)
        opt.zero_grad()
        loss = lf(model(x), y)
        loss.backward()
        opt.step()
        row = mon.step(loss)
    # the second interval (steps 5..9): tier 1 at step 5, tier 0 at step 8
    assert row["grad_sq_steps"] == 2
    assert row["tr_sigma"] == pytest.approx(tr, rel=1e-9)
    mon.close()


def test_parameter_groups_with_different_learning_rates_warn_once_when_it_happens():
    """lr/B, D and C_sgd use the first group's lr: one warning when the groups differ, at construction or
    the first row after a scheduler makes them differ."""
    model, lf = tiny(), nn.CrossEntropyLoss()
    groups = [{"params": model[0].parameters()}, {"params": model[2].parameters()}]
    with pytest.warns(RuntimeWarning, match=r"different learning rates \[0.01, 0.05\] \(at construction\)"):
        Monitor(model, torch.optim.SGD([dict(g, lr=lr) for g, lr in zip(groups, (0.05, 0.01))], lr=0.05)).close()
    groups = [{"params": model[0].parameters()}, {"params": model[2].parameters()}]
    opt = torch.optim.SGD(groups, lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, [lambda e: 1.0, lambda e: 0.5 ** e])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mon = Monitor(model, opt, log_every=2, tier1_every=None)
    seen = []
    for k in range(6):
        x, y = data(8, seed=k)
        opt.zero_grad(); loss = lf(model(x), y); loss.backward(); opt.step(); sched.step()
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            mon.step(loss)
        seen += [(k, str(w.message)) for w in rec if "different learning rates" in str(w.message)]
    assert len(seen) == 1 and seen[0][0] == 1 and "(in the row ending at step 1)" in seen[0][1]
    mon.close()


def _scheduled_run(log_every, tier1_every, steps, lr, factor):
    """A noisy toy problem (tr Sigma / 2 >> drop_factor) trained with SGD at ``lr * factor(step)`` (a per-step
    ``LambdaLR``): returns the monitor."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    mon = Monitor(model, opt, log_every=log_every, tier1_every=tier1_every, window=None)
    g = torch.Generator().manual_seed(3)
    for _ in range(steps):
        x, y = 3 * torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        mon.step(loss)
    mon.close()
    return mon


def _warmup_run(log_every, tier1_every, steps=24, lr0=0.0):
    """:func:`_scheduled_run` under a linear warm-up from ``lr0`` (of 0.2) over 8 steps."""
    return _scheduled_run(log_every, tier1_every, steps, 0.2, lambda s: min(1.0, lr0 + s / 8))


@pytest.mark.parametrize("log_every, tier1_every, lr0", [(4, 4, 0.0), (2, 6, 0.5)],
                         ids=["warmup_from_lr0", "rows_without_tier1"])
def test_regimes_and_transitions_never_mix_C_and_C_sgd(log_every, tier1_every, lr0):
    # C_sgd / C = tr Sigma / 2: a tracker fed C_sgd in one row and C in the next saw a "drop" by that factor. A
    # warm-up from lr = 0 (Hugging Face's linear schedule) measures D = 0 at its first tier-1 step (no C in the first
    # row); with log_every < tier1_every every other row has no C.
    mon = _warmup_run(log_every, tier1_every, lr0=lr0)
    rows = mon.history
    ratios = [r["C_sgd"] / r["C"] for r in rows if r.get("C")]
    assert min(ratios) > 3.0  # the factor between the two is above drop_factor (3): mixing them fires a "drop"
    assert rows[0].get("C") is None or lr0 > 0
    first_c = next(i for i, r in enumerate(rows) if r.get("C") is not None)
    assert all(r["regime_from"] == "C_sgd" for r in rows[:first_c])
    assert all(r["regime_from"] == "C" for r in rows[first_c:])  # for good, also in rows without C
    by_step = {r["step"]: r for r in rows}
    for ev in (e for e in mon.events if e["event"] == "phase_transition"):  # before and after: one column's values
        after = {k for k in ("C", "C_sgd") if by_step[ev["step"]].get(k) == ev["C_after"]}
        before = {k for k in ("C", "C_sgd") if any(r.get(k) == ev["C_before"] for r in rows if r["step"] < ev["step"])}
        assert after & before == {ev.get("source")}, ev
        # C falls as 1/lr: the event carries the learning rates of its two rows (a warm-up's share of the drop)
        assert ev["lr_after"] == by_step[ev["step"]]["lr"]
        assert ev["lr_before"] == next(r["lr"] for r in rows if r.get(ev["source"]) == ev["C_before"])
    for ev in (e for e in mon.events if e["event"] == "regime"):
        assert by_step[ev["step"]][ev.get("source")] == ev["C"]
    # the rows without C carry the regime: no change, no transition
    assert all(not r["regime_changed"] and not r["phase_transition"] for r in rows[first_c:] if r.get("C") is None)


def test_row_lr_is_the_mean_over_its_steps():
    mon = _warmup_run(4, 4, steps=8)
    lrs = [0.2 * min(1.0, s / 8) for s in range(8)]
    assert [r["lr"] for r in mon.history] == pytest.approx([sum(lrs[:4]) / 4, sum(lrs[4:]) / 4], rel=1e-12)


class _Lion(torch.optim.Optimizer):
    """A sign-based optimizer from outside torch (lucidrains' Lion, abridged): the monitor does not know it."""

    def __init__(self, params, lr=1e-4):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    p.add_(torch.sign(p.grad), alpha=-g["lr"])


class _NoLr(torch.optim.Optimizer):
    def __init__(self, params):
        super().__init__(params, dict(step_size=0.1))

    def step(self, closure=None):
        pass


def test_an_optimizer_the_monitor_does_not_know_is_labelled_and_warned_about():
    # until 2026-12-02: lr_kind "other", D and C_sgd computed as for SGD, no word; a group without "lr": KeyError
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = _Lion(model.parameters())
    with pytest.warns(RuntimeWarning, match=r"_Lion is not torch.optim.SGD.*lr_kind='sgd_equivalent'"):
        mon = Monitor(model, opt, log_every=1)
    x, y = data()
    opt.zero_grad()
    loss = lf(model(x), y)
    loss.backward()
    opt.step()
    assert mon.step(loss)["lr_kind"] == "sgd_equivalent"
    mon.close()
    with pytest.raises(ValueError, match=r"_NoLr's parameter group\(s\) \[0\] have no numeric 'lr' \(keys: .*step_size"):
        Monitor(model, _NoLr(model.parameters()))
    import numpy as np

    for lr in (np.float32(0.05), torch.tensor(0.05), 1):  # numeric learning rates of other types are fine
        Monitor(model, torch.optim.SGD(model.parameters(), lr=lr)).close()


def test_heisenberg_sgd_is_sgd_and_its_injected_noise_is_named():
    from hhld.torch.optim import HeisenbergSGD

    model = tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no optimizer warning for the plain gradient step
        Monitor(model, HeisenbergSGD(model.parameters(), lr=0.05, kick_threshold=None, seed=0)).close()
    with pytest.warns(RuntimeWarning, match=r"injects Langevin noise \(D_inject=0.01\).*D=<total diffusion>"):
        mon = Monitor(model, HeisenbergSGD(model.parameters(), lr=0.05, D_inject=0.01, kick_threshold=None, seed=0))
    assert mon.optimizer_kind == "sgd"
    mon.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # D given: nothing to say
        Monitor(model, HeisenbergSGD(model.parameters(), lr=0.05, D_inject=0.01, kick_threshold=None, seed=0),
                D=0.02).close()


def test_a_drop_of_C_that_comes_with_a_rise_of_lr_carries_both_learning_rates():
    # C = ||g||^2/(D d), D = lr tr Sigma/(2 B d): a 10x rise of lr divides C by about 10, which the detector reports as
    # a phase transition; the event says which learning rates its two rows ran at
    mon = _scheduled_run(5, 5, 20, 0.01, lambda s: 1.0 if s < 10 else 10.0)
    evs = [e for e in mon.events if e["event"] == "phase_transition"]
    assert [e["step"] for e in evs] == [14] and evs[0]["source"] == "C"
    assert evs[0]["lr_before"] == pytest.approx(0.01) and evs[0]["lr_after"] == pytest.approx(0.1)
    assert [r["lr"] for r in mon.history] == pytest.approx([0.01, 0.01, 0.1, 0.1])


def test_optimizer_kind_looks_through_a_wrapper():
    from hhld.torch.monitor import optimizer_kind

    model = tiny()

    class Wrapper(torch.optim.Optimizer):  # as accelerate's AcceleratedOptimizer keeps it
        def __init__(self, optimizer):
            self.optimizer = optimizer

    assert optimizer_kind(Wrapper(torch.optim.AdamW(model.parameters()))) == "adaptive"
    assert optimizer_kind(Wrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))) == "sgd_momentum"
    assert optimizer_kind(Wrapper(_Lion(model.parameters()))) == "other"


@pytest.mark.parametrize("kw", [dict(log_every=5, tier1_every=5, tier2_every=1), dict(log_every=5, probe_every=2),
                                dict(log_every=4, tier1_every=1, tier2_every=3, probe_every=3)],
                         ids=["tier2", "probe", "all"])
def test_tier2_and_the_probe_leave_training_as_it_was(kw):
    """Their extra forward passes on the probe batch ran in train mode: they updated BatchNorm's running statistics
    (num_batches_tracked 25 against 10) and drew dropout masks from the global generator, so the monitored model
    trained differently from the same model unmonitored (until 2026-12-02). Now the same weights, buffers and random
    stream, bit for bit."""
    import workloads as W

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))

    probe = (torch.randn(32, 6, generator=torch.Generator().manual_seed(5)),
             torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(6)))
    g = torch.Generator().manual_seed(1)
    batches = [((torch.randn(16, 6, generator=g),), torch.randint(0, 3, (16,), generator=g)) for _ in range(12)]
    plain, monitored = W.train_monitored_and_not(
        build, batches, F.cross_entropy, 0.1, dict(loss_fn=F.cross_entropy, hessian_batch=probe, **kw),
        lambda rows: any(r.get("hessian_trace") is not None or r.get("probe_tr_sigma") is not None for r in rows))
    assert W.same_training(plain, monitored)


def test_torch_func_transforms_in_the_step_change_nothing():
    """Per-sample gradients computed by the user with torch.func on the monitored model in the same step (a
    functorch DP-SGD clip, an influence score): that forward and backward are the transform's, not the step's.
    The row is the one of the same step without them (it was: coverage 0, "create_graph=True in this step"),
    and the user's per-sample gradients are the ones an unmonitored model gives."""
    from torch.func import functional_call, grad, vmap

    def run(with_func, monitored):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        mon = Monitor(model, opt, tier1_every=1, log_every=1, window=None) if monitored else None
        x, y = torch.randn(12, 6, generator=torch.Generator().manual_seed(1)), torch.arange(12) % 3
        per = None
        if with_func:
            params = {k: v.detach() for k, v in model.named_parameters()}

            def f(p, xi, yi):
                return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

            per = vmap(grad(f), in_dims=(None, 0, 0))(params, x, y)
        opt.zero_grad(); loss = F.cross_entropy(model(x), y); loss.backward(); opt.step()
        row = mon.step(loss) if mon is not None else None
        if mon is not None:
            mon.close()
        return row, per

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no coverage warning
        row, per = run(True, True)
    ref, _ = run(False, True)
    _, per_plain = run(True, False)
    assert row["noise_coverage"] == 1.0 and row["tr_sigma"] == pytest.approx(ref["tr_sigma"], rel=1e-12)
    for k in ("grad_sq_norm", "C_sgd", "grad_sq_norm_unbiased", "D", "C"):
        assert row[k] == pytest.approx(ref[k], rel=1e-12)
    for k in per_plain:
        assert torch.equal(per[k], per_plain[k])


def _loop(steps, mon_kw, *, step_when, mon_when, zero_first=True, to_none=True, divide=1):
    """The tiny model trained ``steps`` batches: ``optimizer.step()`` where ``step_when(k)``, ``mon.step(loss)`` where
    ``mon_when(k)``; the gradients zeroed before each backward (``zero_first``) or after each optimizer step, each
    loss divided by ``divide`` (accumulation). Returns the closed monitor and its warnings' messages."""
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, window=None, **mon_kw)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for k in range(steps):
            x, y = data(8, seed=k)
            if zero_first:
                opt.zero_grad(set_to_none=to_none)
            loss = F.cross_entropy(model(x), y) / divide
            loss.backward()
            if step_when(k):
                opt.step()
                if not zero_first:
                    opt.zero_grad(set_to_none=to_none)
            if mon_when(k):
                mon.step(loss)
    mon.close()
    return mon, [str(w.message) for w in rec]


@pytest.mark.parametrize("zero_grad_to_none", [True, False])
def test_mon_step_per_micro_batch_pools_into_the_optimizer_step(zero_grad_to_none):
    """Gradient accumulation with mon.step() called after every micro-batch (instead of once per optimizer step):
    the micro-batches the optimizer has not applied yet are carried into its step, so the rows are those of
    mon.step() once per optimizer step (they were: half the batch, per-sample gradients of one micro-batch against
    the accumulated mean, and a 'skipped' step per micro-batch), with one warning saying what to do. A backward whose
    gradients are reset before the next one (GradScaler's skip, then zero_grad) is still a skipped step."""

    def run(per_micro):
        return _loop(8, dict(tier1_every=1, log_every=4 if per_micro else 2), step_when=lambda k: k % 2 == 1,
                     mon_when=lambda k: per_micro or k % 2 == 1, zero_first=False, to_none=zero_grad_to_none, divide=2)

    ref, wref = run(False)
    got, wgot = run(True)
    assert wref == [] and len(wgot) == 1 and "between the backward passes of one optimizer step" in wgot[0]
    assert len(got.history) == len(ref.history) == 2
    for a, b in zip(got.history, ref.history):
        assert a["skipped_steps"] == 0 and a["steps"] == b["steps"] == 2
        for k in ("grad_sq_norm", "C_sgd", "tr_sigma", "grad_sq_norm_unbiased", "D"):
            assert a[k] == pytest.approx(b[k], rel=1e-9), k
    assert not [e for e in got.events if e["event"] == "skipped_step"]

    # a real skip: backward, no optimizer step, the gradients reset before the next backward
    mon, msgs = _loop(4, dict(tier1_every=1, log_every=2), step_when=lambda k: k != 1, mon_when=lambda k: True,
                      to_none=zero_grad_to_none)
    assert [e["step"] for e in mon.events if e["event"] == "skipped_step"] == [1]
    assert [r["skipped_steps"] for r in mon.history] == [0, 1]
    assert any("took no step" in m for m in msgs)


@pytest.mark.parametrize("schedule", [dict(tier0_every=5, tier1_every=7, log_every=7),
                                      dict(tier0_every=2, tier1_every=3, log_every=6), {}])
def test_mon_step_per_micro_batch_on_sampled_schedules_measures_whole_optimizer_steps(schedule):
    """mon.step() per micro-batch (3 per optimizer step) with schedules whose measured steps fall anywhere in an
    optimizer step: every measured step has the optimizer step's B and exact ||g||^2, every tier-1 measurement is
    the brute-force (torch.func) one of all the step's samples, no step is called skipped, and tier 1 happens (when
    it falls due on a later micro-batch it is taken at the next optimizer step)."""
    from torch.func import functional_call, grad, vmap

    from hhld.torch.quantities import GradientStats, NoiseScale

    seen_g, seen_t1 = [], []
    g0, t0 = GradientStats.pre_step, NoiseScale.pre_step

    def spy_g(self, ctx):
        seen_g.append((ctx.batch_size, ctx.grad_sq))
        return g0(self, ctx)

    def spy_t1(self, ctx):
        if ctx.per_sample is not None:
            seen_t1.append((float(ctx.per_sample.mean_sq), float(ctx.per_sample.gbar_sq), ctx.per_sample.batch_size))
        return t0(self, ctx)

    model, accum = tiny(), 3
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, window=None, **schedule)
    gsq, moments, xs, ys = [], [], [], []
    try:
        GradientStats.pre_step, NoiseScale.pre_step = spy_g, spy_t1
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            for k in range(45):
                x, y = data(8, seed=k)
                xs.append(x); ys.append(y)
                loss = F.cross_entropy(model(x), y) / accum
                loss.backward()
                if k % accum == accum - 1:
                    X, Y = torch.cat(xs), torch.cat(ys)
                    xs, ys = [], []
                    params = {n: p.detach() for n, p in model.named_parameters()}
                    per = vmap(grad(lambda p, xi, yi: F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])),
                               in_dims=(None, 0, 0))(params, X, Y)
                    flat = torch.cat([v.reshape(len(X), -1) for v in per.values()], 1)
                    moments.append((float(flat.pow(2).sum(1).mean()), float(flat.mean(0).pow(2).sum())))
                    gsq.append(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
                    opt.step()
                    opt.zero_grad()
                mon.step(loss)
    finally:
        GradientStats.pre_step, NoiseScale.pre_step = g0, t0
    mon.close()
    assert seen_g and all(B == 8 * accum and any(abs(g - t) <= 1e-12 * t for t in gsq) for B, g in seen_g)
    assert seen_t1 and all(B == 8 * accum and any(abs(m - a) <= 1e-9 * a and abs(g - b) <= 1e-9 * b for a, b in moments)
                           for m, g, B in seen_t1)
    assert not [e for e in mon.events if e["event"] == "skipped_step"]
    assert sum(1 for w in rec if "between the backward passes of one optimizer step" in str(w.message)) == 1


def test_mon_step_before_optimizer_step_warns_and_measures_nothing_wrong():
    """mon.step() between backward() and optimizer.step() (the wrong order): one warning that says so and what to
    do; the first update is measured (its backward passes are the ones it applies: exact), the later ones are not
    (the monitor cannot pair them), and nothing raises (it was: 'could not find the batch size' from the second
    optimizer.step() on)."""
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, tier1_every=1, log_every=1, window=None)
    ref_model = tiny()
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.05)
    ref = Monitor(ref_model, ref_opt, tier1_every=1, log_every=1, window=None)
    x, y = data(8, seed=0)
    ref_opt.zero_grad(); ref_loss = F.cross_entropy(ref_model(x), y); ref_loss.backward(); ref_opt.step()
    r0 = ref.step(ref_loss)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        rows = []
        for k in range(4):
            x, y = data(8, seed=k)
            opt.zero_grad(); loss = F.cross_entropy(model(x), y); loss.backward()
            rows.append(mon.step(loss))
            opt.step()
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 1 and "after backward() but before optimizer.step()" in msgs[0]
    assert rows[0] is None  # the first call closed no optimizer step
    assert rows[1]["tr_sigma"] == pytest.approx(r0["tr_sigma"], rel=1e-12)
    assert rows[1]["grad_sq_norm"] == pytest.approx(r0["grad_sq_norm"], rel=1e-12)
    assert all(r.get("grad_sq_norm") is None and r.get("tr_sigma") is None for r in rows[2:])
    assert all(math.isfinite(r["loss"]) for r in rows[1:])
    mon.close(); ref.close()


@pytest.mark.parametrize("zero_grad_to_none", [True, False])
def test_mon_step_every_k_optimizer_steps_closes_each_step_itself(zero_grad_to_none):
    """mon.step() called every 5th optimizer step (as a logging call): each optimizer step is still one monitor
    step, closed by the next optimizer.step() (no loss, no tier 2), with the tier-0 row of a run that calls mon.step()
    every step; its per-sample statistics are not measured, and say why. Before: the row merged the 5 steps, and with
    zero_grad(set_to_none=False) their samples were summed into B (C_sgd 2x off), silently."""

    def run(every):
        return _loop(15, dict(tier1_every=3, log_every=1), step_when=lambda k: True,
                     mon_when=lambda k: k % every == every - 1, to_none=zero_grad_to_none)

    ref, wref = run(1)
    got, wgot = run(5)
    assert wref == [] and sum("with no mon.step() since the last one" in w for w in wgot) == 1
    assert all("no mon.step() since the last one" in w or "ran twice with no mon.step() between" in w for w in wgot)
    assert [r["step"] for r in got.history] == [r["step"] for r in ref.history] == list(range(15))
    for a, b in zip(got.history, ref.history):
        assert a["steps"] == 1 and a["grad_sq_norm"] == pytest.approx(b["grad_sq_norm"], rel=1e-12)
        assert a["C_sgd"] == pytest.approx(b["C_sgd"], rel=1e-12)
    assert got.history[0]["tr_sigma"] == pytest.approx(ref.history[0]["tr_sigma"], rel=1e-12)  # step 0: not split
    for k in (3, 6, 9, 12):  # later tier-1 steps were closed by the next optimizer step: not measured, and why
        assert got.history[k].get("tr_sigma") is None and ref.history[k]["tr_sigma"] is not None
        assert "ran twice with no mon.step() between" in got.history[k]["noise_note"]
    assert [r["step"] for r in got.history if "loss" in r] == [4, 9, 14]


def _monitored_run(steps, resume_at=None, **kw):
    """A short run (tier 1 every 3 steps, rows every 4, an uncertainty window of 6 samples, curvature every 5): all
    `steps` in one go, or stopped after `resume_at` steps and continued by a new model, optimizer and monitor
    restored from checkpoints saved with torch.save and read back with torch.load(weights_only=True)."""
    import io

    lf = nn.CrossEntropyLoss()
    hb = data(16, seed=99)

    def build():
        model = tiny()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        mon = Monitor(model, opt, tier1_every=3, log_every=4, window=6, uncertainty_every=1, loss_fn=lf,
                      hessian_batch=hb, tier2_every=5, **kw)
        return model, opt, mon

    model, opt, mon = build()
    for k in range(steps):
        if k == resume_at:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "monitor": mon.state_dict()}, buf)
            mon.close()
            buf.seek(0)
            ck = torch.load(buf, weights_only=True)
            model, opt, mon = build()
            model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); mon.load_state_dict(ck["monitor"])
        x, y = data(8, seed=k)
        opt.zero_grad(); loss = lf(model(x), y); loss.backward(); opt.step(); mon.step(loss)
    mon.close()
    return mon


@pytest.mark.parametrize("resume_at", [4, 7, 10])
def test_monitor_state_dict_resumes_a_run_as_if_never_stopped(resume_at):
    """Checkpoint and resume (at an interval's start, and in the middle of an interval, an uncertainty window and the
    curvature's schedule): the resumed run's rows and events are the uninterrupted run's, bit for bit."""
    ref = _monitored_run(16)
    got = _monitored_run(16, resume_at=resume_at)
    assert len(ref.history) == 4 and any(r.get("uncertainty_product") for r in ref.history)
    assert any(r.get("lambda_max") for r in ref.history) and any(r.get("tr_sigma") for r in ref.history)
    assert got.history == ref.history
    assert got.events == ref.events


def test_monitor_state_dict_refusals_say_what_to_do():
    model = tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=2)
    x, y = data(8)
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(RuntimeError, match="between optimizer steps, after mon.step"):
        mon.state_dict()
    opt.step(); mon.step()
    sd = mon.state_dict()
    other = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match="watched other parameters"):
        m2 = tiny(); Monitor(m2, torch.optim.SGD(m2[0].parameters(), lr=0.1)).load_state_dict(sd)
    with pytest.raises(ValueError, match="quantities"):
        m3 = tiny(); Monitor(m3, torch.optim.SGD(m3.parameters(), lr=0.1), window=None).load_state_dict(sd)
    with pytest.raises(ValueError, match="not a Monitor state_dict"):
        mon.load_state_dict({"state": {}})
    with pytest.raises(RuntimeError, match="before its first step"):
        mon.load_state_dict(sd)
    del other
    mon.close()


def test_a_param_group_added_mid_training_is_watched_from_that_step():
    """Unfreezing with optimizer.add_param_group(...) mid-training: the monitor watches the new parameters from that
    step on (||g||^2 of the applied gradient, d, per-sample statistics from the next tier-1 step), with an event and
    one warning. Before, it kept watching the old set: ||g||^2 of the unfrozen step 0.239 against 0.319 applied."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    for p in m[0].parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD(m[2].parameters(), lr=0.05)
    mon = Monitor(m, opt, tier1_every=1, log_every=1, window=None)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for k in range(4):
            if k == 2:
                for p in m[0].parameters():
                    p.requires_grad_(True)
                opt.add_param_group({"params": list(m[0].parameters())})
            x, y = data(8, seed=k)
            opt.zero_grad(); loss = F.cross_entropy(m(x), y); loss.backward()
            applied = sum(float(p.grad.pow(2).sum()) for p in m.parameters() if p.grad is not None)
            tr, _ = _per_sample(m, x, y) if k == 3 else (None, None)
            opt.step(); row = mon.step(loss)
            assert row["grad_sq_norm"] == pytest.approx(applied, rel=1e-12)
    assert mon.dim == sum(p.numel() for p in m.parameters())
    assert [e["step"] for e in mon.events if e["event"] == "parameters_changed"] == [2]
    assert sum("the optimizer's parameters changed before step 2" in str(w.message) for w in rec) == 1
    assert mon.history[2]["noise_coverage"] < 1  # the new parameters: per-sample statistics from the next step
    assert mon.history[3]["noise_coverage"] == 1.0 and mon.history[3]["tr_sigma"] == pytest.approx(tr, rel=1e-9)
    mon.close()


def _decayed_per_sample(model, x, y, alphas, c=None):
    """Per-sample gradients ``c ce_i'`` plus the optimizer's L2 decay ``a p`` (float64; ``c`` a clipping factor of
    the batch gradient to norm ``c``... given as the max_norm of clip_grad_norm_): (tr Sigma, unbiased |G|^2,
    |gbar|^2) of the gradient the step applies."""
    params = list(model.parameters())
    losses = F.cross_entropy(model(x), y, reduction="none")
    R = torch.cat([(a * p.detach()).reshape(-1) for p, a in zip(params, alphas)]).double()
    G = torch.stack([torch.cat([t.reshape(-1) for t in torch.autograd.grad(losses[i], params, retain_graph=True)])
                     for i in range(len(y))]).double()
    if c is not None:  # clip_grad_norm_(max_norm=c) of the batch gradient, before the decay is added
        G = G * min(1.0, c / (float(G.mean(0).norm()) + 1e-6))
    G = G + R
    B, gbar = len(y), G.mean(0)
    tr = float(((G - gbar) ** 2).sum() / (B - 1))
    return tr, float((gbar ** 2).sum()) - tr / B, float((gbar ** 2).sum())


@pytest.mark.parametrize("case", ["sgd", "nesterov_maximize", "no_decay_group", "adam", "adamw", "adadelta",
                                  "clipped"])
def test_weight_decay_in_the_step_is_part_of_the_applied_gradient(case):
    """torch.optim.SGD(weight_decay=a) applies p.grad + a p: every row quantity is of that gradient, as for the
    same decay written in the loss (per-sample autograd of ``ce_i`` plus ``a p``; tr Sigma unchanged by it). Before
    2026-12-02 the rows described p.grad alone (||g||^2 +36 % on a 200-step run, silently). Adam's L2 decay is in
    its gradient too; AdamW's decoupled decay is not (rows of p.grad). ``maximize=True`` steps along -p.grad + a p;
    clipping acts on p.grad, the decay is added after it, inside step()."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    a, max_norm = 0.05, 0.05
    params = list(model.parameters())
    if case == "no_decay_group":  # the transformer recipe: biases without decay
        groups = [{"params": [p for p in params if p.dim() > 1]},
                  {"params": [p for p in params if p.dim() == 1], "weight_decay": 0.0}]
        opt = torch.optim.SGD(groups, lr=0.1, weight_decay=a)
        alphas = [a if p.dim() > 1 else 0.0 for p in params]
    elif case == "nesterov_maximize":
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=a, maximize=True)
        alphas = [-a] * len(params)
    elif case == "adadelta":  # its decay is an L2 one too (torch/optim/adadelta.py)
        opt = torch.optim.Adadelta(params, lr=1.0, weight_decay=a)
        alphas = [a] * len(params)
    elif case in ("adam", "adamw"):
        opt = (torch.optim.Adam if case == "adam" else torch.optim.AdamW)(params, lr=1e-3, weight_decay=a)
        alphas = [a if case == "adam" else 0.0] * len(params)
    else:
        opt = torch.optim.SGD(params, lr=0.1, weight_decay=a)
        alphas = [a] * len(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # adaptive optimizers: the SGD-equivalent warning
        mon = Monitor(model, opt, log_every=1, tier1_every=1)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(12, 6, generator=g), torch.randint(0, 3, (12,), generator=g)
        tr, gu, gb = _decayed_per_sample(model, x, y, alphas, max_norm if case == "clipped" else None)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if case == "clipped":
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt.step()
            row = mon.step(loss)
    if case == "clipped":
        assert row["clipped_steps"] == 1 and row["clip_coef"] < 1
    assert row["grad_sq_norm"] == pytest.approx(gb, rel=1e-5)
    assert row["tr_sigma"] == pytest.approx(tr, rel=1e-4)
    assert row["grad_sq_norm_unbiased"] == pytest.approx(gu, rel=1e-3)
    assert row["C_sgd"] == pytest.approx(gb / (opt.param_groups[0]["lr"] / 12), rel=1e-5)
    if gu > 0:
        assert row["b_simple"] == pytest.approx(tr / gu, rel=1e-3)
    assert mon.l2_decay() == {nm: al for (nm, _), al in zip(model.named_parameters(), alphas) if al}
    mon.close()


def test_weight_decay_of_an_optimizer_the_monitor_does_not_know_is_named_once():
    model, lf = tiny(), nn.CrossEntropyLoss()

    class LionWD(_Lion):
        def __init__(self, params, lr=1e-4, weight_decay=0.1):
            torch.optim.Optimizer.__init__(self, params, dict(lr=lr, weight_decay=weight_decay))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sgd_equivalent warning
        mon = Monitor(model, LionWD(model.parameters()), log_every=1)
    x, y = data()
    with pytest.warns(RuntimeWarning, match=r"LionWD has weight_decay=0.1.*does not know whether.*p.grad alone"):
        for _ in range(2):
            mon.optimizer.zero_grad()
            loss = lf(model(x), y)
            loss.backward()
            mon.optimizer.step()
            row = mon.step(loss)
    grads = [p.grad.double() for p in model.parameters()]
    assert row["grad_sq_norm"] == pytest.approx(float(sum((g ** 2).sum() for g in grads)), rel=1e-9)
    assert mon.l2_decay() == {}
    mon.close()


def test_weight_decay_in_tier2_and_noise_stats():
    """With SGD's L2 decay the Hessian of the objective the step descends is H + a I: tier 2's Hutchinson trace
    is Tr H + a d (exactly: Rademacher probes), its top eigenvalue lambda_max(H) + a (the exact Hessian); and
    ``noise_stats`` / the probe columns give the unbiased |G|^2 of ce_i + a p (tr Sigma unchanged)."""
    model, lf = tiny(), nn.MSELoss()
    x, _ = data(16)
    y = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    H = exact_hessian(model, lf, x, y)
    a = 0.3
    d = sum(p.numel() for p in model.parameters())
    ev = torch.linalg.eigvalsh(H + a * torch.eye(d, dtype=H.dtype))
    tr_plain, gu_plain, _ = reference(model, lf, x, y)
    R = torch.cat([a * p.detach().reshape(-1) for p in model.parameters()])
    gbar = torch.cat([t.reshape(-1) for t in torch.autograd.grad(lf(model(x), y), list(model.parameters()))])
    gu_decayed = float(((gbar + R) ** 2).sum()) - tr_plain / 16
    rows = {}
    for wd in (0.0, a):
        opt = torch.optim.SGD(model.parameters(), lr=1e-12, weight_decay=wd)  # parameters ~ unchanged
        mon = Monitor(model, opt, log_every=1, tier1_every=1, loss_fn=lf, hessian_batch=(x, y), tier2_every=1,
                      n_probes=4, power_iters=60, seed=3, probe_every=1)
        stats = mon.noise_stats(lf, x, y)
        opt.zero_grad()
        lf(model(x), y).backward()
        opt.step()
        rows[wd] = mon.step()
        mon.close()
        assert stats.tr_sigma == pytest.approx(tr_plain, rel=1e-9)
        assert stats.grad_sq_norm_unbiased == pytest.approx(gu_decayed if wd else gu_plain, rel=1e-9)
        assert rows[wd]["probe_grad_sq_norm_unbiased"] == pytest.approx(stats.grad_sq_norm_unbiased, rel=1e-6)
    assert rows[a]["hessian_trace"] == pytest.approx(rows[0.0]["hessian_trace"] + a * d, rel=1e-9)  # same probes
    assert rows[a]["lambda_max"] == pytest.approx(float(ev[ev.abs().argmax()]), rel=1e-2)  # a = 12 % of it
    with pytest.raises(ValueError, match=r"l2_decay names parameters the model has not.*'nope'"):
        from hhld.torch.noise import gradient_noise_stats

        gradient_noise_stats(model, lf, x, y, l2_decay={"nope": 0.1})


def _plain_step(model, opt, mon, x, y, zero=True, to_none=True):
    if zero:
        opt.zero_grad(set_to_none=to_none)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return mon.step(loss)


def test_a_forgotten_zero_grad_is_named_and_leaves_the_per_sample_statistics_out():
    """No zero_grad() at all: each step's backward adds to the previous steps' gradients. Until 2026-12-02 the
    rows mixed this batch's per-sample norms with the accumulated gradient: tr_sigma -31 % to -42 % (negative at
    the default schedule), coverage 1.0, no warning. Now one warning, and those steps' per-sample statistics are
    left out with the reason; a gradient zeroed before step() applies zero: said too."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1, tier1_every=1)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(3)]
    assert _plain_step(model, opt, mon, *batches[0])["tr_sigma"] > 0
    with pytest.warns(RuntimeWarning, match=r"not reset since the previous optimizer step.*zero_grad\(\)"):
        row = _plain_step(model, opt, mon, *batches[1], zero=False)
    assert row["tr_sigma"] is None and row["noise_coverage"] == 0.0 and "no zero_grad()" in row["noise_note"]
    row = _plain_step(model, opt, mon, *batches[2], to_none=False)  # zeroed in place: measured again
    assert row["tr_sigma"] > 0 and row["noise_coverage"] == 1.0
    mon.close()
    mon = Monitor(model, opt, log_every=1)
    opt.zero_grad(set_to_none=False)
    F.cross_entropy(model(batches[0][0]), batches[0][1]).backward()
    opt.zero_grad(set_to_none=False)  # in the wrong place
    with pytest.warns(RuntimeWarning, match=r"exactly zero although a backward pass ran"):
        opt.step()
    assert mon.step()["grad_sq_norm"] == 0.0
    mon.close()


def test_gradients_changed_between_micro_batches_leave_the_step_unmeasured_with_the_reason():
    """Clipping each micro-batch's gradient: the step's gradient is no sum of per-sample gradients."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1, tier1_every=1)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
    opt.zero_grad()
    for xi, yi in zip(x.chunk(2), y.chunk(2)):
        (F.cross_entropy(model(xi), yi) / 2).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
    opt.step()
    with pytest.warns(RuntimeWarning):  # (this first tier-1 step is also a sum check's, which fails: coverage)
        row = mon.step()
    assert row["tr_sigma"] is None and "changed between two backward passes" in row["noise_note"]
    mon.close()


def test_the_lr_is_that_of_the_first_group_that_trains_something():
    """A linear probe's groups: the backbone's (frozen, filtered out: empty) lr 1e-4 first, the head's 1e-3. Until
    2026-12-02 lr, C_sgd, D, C used the empty group's lr (10x off), with no warning."""
    model = tiny()
    for p in model[0].parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD([{"params": [p for p in model[0].parameters() if p.requires_grad], "lr": 1e-4},
                           {"params": list(model[2].parameters()), "lr": 1e-3}])
    mon = Monitor(model, opt, log_every=1, tier1_every=1)
    x, y = data(8)
    row = _plain_step(model, opt, mon, x, y)
    assert row["lr"] == 1e-3
    assert row["C_sgd"] == pytest.approx(row["grad_sq_norm"] / (1e-3 / 8), rel=1e-12)
    mon.close()


def test_b_simple_at_lr_zero_and_frozen_or_unused_parameters():
    """lr = 0 (a warm-up's start): B_simple = tr Sigma/||G||^2 does not depend on lr (was None, with a note saying
    ||G||^2 <= 0 while it was > 0); only C_measured is undefined. A frozen parameter that keeps a zeroed gradient
    (zero_grad(set_to_none=False)) is not part of d (was: counted, C 0.31x off, coverage 0.31); a parameter
    without a gradient this step (a branch not taken) has exactly zero per-sample gradients: covered."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2)).double()
    aux = nn.Linear(2, 2).double()
    model.add_module("aux", aux)  # used on no step
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    mon = Monitor(model, opt, log_every=1, tier1_every=1)
    x, y = data(64, seed=5)  # a batch whose unbiased ||G||^2 is > 0
    seq = lambda t: model[2](model[1](model[0](t)))  # noqa: E731
    tr, gu, _ = reference(nn.Sequential(model[0], model[1], model[2]), nn.CrossEntropyLoss(), x, y)
    opt.zero_grad(set_to_none=False)
    loss = F.cross_entropy(seq(x), y)
    loss.backward()
    opt.step()
    row = mon.step(loss)
    assert gu > 0 and row["b_simple"] == pytest.approx(tr / gu, rel=1e-9)
    assert row["C_measured"] is None and "lr = 0" in row["noise_note"]
    assert row["noise_coverage"] == 1.0
    model[0].requires_grad_(False)  # frozen mid-training: its gradients stay, zeroed
    opt.param_groups[0]["lr"] = 0.1
    for _ in range(2):
        row = _plain_step(model, opt, mon, x, y, to_none=False)
    d = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert row["noise_coverage"] == 1.0
    assert row["C"] == pytest.approx(row["grad_sq_norm"] / (row["D"] * d), rel=1e-9)
    assert mon.uncovered_parameters() == {"0.weight": "frozen (requires_grad=False): not part of the steps, nor of "
                                          "the dimension d", "0.bias": "frozen (requires_grad=False): not part of "
                                          "the steps, nor of the dimension d"}
    mon.close()


def test_a_copy_of_the_monitored_model_carries_no_monitor(tmp_path):
    """copy.deepcopy(model) (the best model so far, an EMA / AveragedModel) and torch.save(model) after a step: until
    2026-12-02 a TypeError ("cannot pickle 'AccumulateGrad' object"), and before the first step the copy got a
    second monitor of its own. Now the copy's hooks do nothing, and its passes leave the monitor's rows alone."""
    import copy

    from hhld.torch.copy_inert import NOOP

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1, tier1_every=1)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
    _plain_step(model, opt, mon, x, y)
    best = copy.deepcopy(model)
    opt_copy = copy.deepcopy(opt)
    assert all(h is NOOP for h in list(best._forward_hooks.values()) + list(best._forward_pre_hooks.values()))
    assert all(h is NOOP for h in opt_copy._optimizer_step_pre_hooks.values())
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert all(h is NOOP for h in loaded._forward_hooks.values())
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    F.cross_entropy(best(x), y).backward()  # the copy's own pass: not the monitor's
    tr, gsq = _per_sample(model, x, y)
    opt.step()
    row = mon.step(loss)
    assert row["tr_sigma"] == pytest.approx(tr, rel=1e-4) and row["C_sgd"] == pytest.approx(gsq / (0.05 / 8), rel=1e-4)
    mon.close()


class _TimeFirst(nn.Module):
    """A diffusion-style model called as model(t, x) with a shared time of shape (1,)."""

    def __init__(self):
        super().__init__()
        self.l0, self.l1 = nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, t, x):
        return self.l1(torch.tanh(self.l0(torch.cat([x, t.expand(x.shape[0], 1)], 1))))


def test_a_batch_that_is_not_the_first_argument_is_named():
    """model(t, x) with t of shape (1,): B = 1 was taken from t silently (C_sgd 16x off); now one warning names the
    argument that holds the batch and says to pass batch_size=. A model of one argument whose output flattens the
    batch (nanoGPT's (B*T, V) logits) gives none."""
    torch.manual_seed(0)
    model = _TimeFirst()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1, tier1_every=None)
    x, y, t = torch.randn(16, 4), torch.randint(0, 3, (16,)), torch.rand(1)
    with pytest.warns(RuntimeWarning, match=r"B = 1 from axis 0.*output has 16 rows.*pass batch_size=16"):
        opt.zero_grad()
        F.cross_entropy(model(t, x), y).backward()
    opt.step()
    mon.step()
    mon.close()
    mon = Monitor(model, opt, log_every=1, tier1_every=None, batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.zero_grad()
        F.cross_entropy(model(t, x), y).backward()
        opt.step()
        assert mon.step()["C_sgd"] == pytest.approx(mon.history[-1]["grad_sq_norm"] / (0.05 / 16))
    mon.close()
    flat = nn.Sequential(nn.Embedding(11, 4), nn.Flatten(0, 1), nn.Linear(4, 11))  # (B, T) ids -> (B*T, 11) logits
    opt = torch.optim.SGD(flat.parameters(), lr=0.05)
    mon = Monitor(flat, opt, log_every=1, tier1_every=None)
    ids = torch.randint(0, 11, (4, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.cross_entropy(flat(ids), ids.reshape(-1)).backward()
        opt.step()
        mon.step()
    mon.close()


@pytest.mark.parametrize("to_none", [True, False])
def test_a_gan_discriminator_step_after_the_generator_step_through_it(to_none):
    """Monitor(D, opt_D) in a GAN loop: the generator's step backpropagates through D (writing D's gradients), then
    D's zero_grad and its own pass. With zero_grad(set_to_none=False) the generator's pass stayed in D's step until
    2026-12-02 (C_sgd 2x, tr_sigma 3.4x, coverage 1.0, silently); the row is that of D's own pass (per-sample
    autograd)."""
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    D = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    opt_g, opt_d = torch.optim.SGD(G.parameters(), lr=0.05), torch.optim.SGD(D.parameters(), lr=0.05)
    mon = Monitor(D, opt_d, log_every=1, tier1_every=1)
    gen = torch.Generator().manual_seed(1)
    target = torch.cat([torch.ones(8, 1), torch.zeros(8, 1)])
    for _ in range(3):
        fake = G(torch.randn(16, 8, generator=gen))
        opt_d.zero_grad(set_to_none=to_none)
        x = torch.cat([torch.randn(8, 4, generator=gen) + 2, fake[:8].detach()])
        losses = F.binary_cross_entropy_with_logits(D(x), target, reduction="none").reshape(-1)
        Gs = torch.stack([torch.cat([t.reshape(-1) for t in torch.autograd.grad(losses[i], list(D.parameters()),
                                                                                retain_graph=True)])
                          for i in range(16)]).double()
        tr = float(((Gs - Gs.mean(0)) ** 2).sum() / 15)
        gsq = float((Gs.mean(0) ** 2).sum())
        loss = losses.mean()
        loss.backward()
        opt_d.step()
        row = mon.step(loss)
        opt_g.zero_grad(set_to_none=to_none)
        F.binary_cross_entropy_with_logits(D(fake), torch.ones(16, 1)).backward()  # writes D's gradients too
        opt_g.step()
    assert row["noise_coverage"] == 1.0
    assert row["tr_sigma"] == pytest.approx(tr, rel=1e-4)
    assert row["C_sgd"] == pytest.approx(gsq / (0.05 / 16), rel=1e-4)
    mon.close()


def test_two_step_closure_calls_before_mon_step_are_two_optimizer_steps():
    """optimizer.step(closure) twice before mon.step() (Lightning calls step with a closure; PPO-style inner
    updates): until 2026-12-02 the second call was taken for a second evaluation of the first step's closure, so the
    two optimizer steps became one row (the first's ||g||^2, the second's loss, B of both), silently. Now each is a
    step, as without closures (one warning)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=1, tier1_every=None)
    g = torch.Generator().manual_seed(1)
    sq = []
    with pytest.warns(RuntimeWarning, match="optimizer.step\\(\\) ran again"):
        for _ in range(2):
            x, y = torch.randn(4, 6, generator=g), torch.randint(0, 3, (4,), generator=g)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            sq.append(float(sum((p.grad.double() ** 2).sum() for p in model.parameters())))
            opt.step(lambda: None)
        mon.step()
    assert [r["grad_sq_norm"] for r in mon.history] == pytest.approx(sq, rel=1e-6)  # (float32 norms)
    assert [r["C_sgd"] for r in mon.history] == pytest.approx([s / (0.05 / 4) for s in sq], rel=1e-6)
    mon.close()
