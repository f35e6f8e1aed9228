"""The monitor on real workloads x training practices, each cell against a float64 per-sample reference.

The table (workloads, practices, cells, the reference and the tolerances) is ``workloads.py``; this file
runs it. A failing cell lists every quantity that is off, with its relative error.
"""
import functools
import math

import pytest
import torch
from torch import nn

import workloads as W


def _compile_available():
    try:
        f = torch.compile(lambda x: x + 1, backend="aot_eager")
        return bool((f(torch.zeros(1)) == 1).all())
    except Exception:  # noqa: BLE001 - any failure means: no torch.compile here
        return False


@functools.lru_cache(maxsize=None)
def _torch_fails_under_autocast(workload: str, dtype) -> str | None:
    """torch's own error when the workload's plain model (no monitor) cannot run its forward under CPU autocast to
    ``dtype`` on this host, else None (oneDNN's bf16 LSTM needs AVX-512: on an AVX2-only CPU torch raises 'could not
    create a primitive descriptor')."""
    wl = W.WORKLOADS[workload]
    inputs, _ = wl.data(wl.batch, 0)
    try:
        with torch.autocast("cpu", dtype=dtype):
            wl.build()(*inputs)
    except RuntimeError as exc:
        return str(exc).splitlines()[0][:120]
    return None


def _needs(cell_id):
    """Skip reasons: an optional package or torch feature the cell needs is missing."""
    if cell_id == W.HF_CELL:
        pytest.importorskip("transformers", reason="transformers not installed (pip install 'hhld[hf]')")
        pytest.importorskip("accelerate", reason="accelerate not installed (pip install 'hhld[hf]')")
        return
    cell = next(c for c in W.CELLS if c.id == cell_id)
    pr, wl = W.PRACTICES[cell.practice], W.WORKLOADS[cell.workload]
    if pr.runner == "lightning":
        pytest.importorskip("lightning", reason="lightning not installed (pip install 'hhld[lightning]')")
    if pr.runner == "ddp":
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_gloo_available()):
            pytest.skip("torch.distributed with gloo is not available")
    if wl.compiled and not _compile_available():
        pytest.skip("torch.compile is not available")
    if pr.autocast is not None:
        why = _torch_fails_under_autocast(cell.workload, pr.autocast)
        if why:
            pytest.skip(f"torch itself cannot run this model under CPU {pr.autocast} autocast on this host: {why}")


CELL_IDS = [c.id for c in W.CELLS] + [W.HF_CELL]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("cell_id", CELL_IDS)
def test_cell(cell_id, tmp_path):
    _needs(cell_id)
    problems = W.check_cell(cell_id, str(tmp_path))
    assert not problems, f"{cell_id}:\n  " + "\n  ".join(problems)


# ---------------------------------------------------------------------- the table itself
def test_matrix_covers_every_workload_and_practice():
    letters = {W.WORKLOADS[c.workload].letter for c in W.CELLS}
    # the (a)-(g); (h) in-batch pairings and mixings (metric learning, mixup); (i) other layers
    assert letters == set("abcdefghi")
    used = {c.practice for c in W.CELLS} | {"hf_trainer"}
    assert used == set(W.PRACTICES)
    ids = {c.id for c in W.CELLS}
    # the risky combinations
    for must in ("gpt_sdpa-clip", "gpt_sdpa-accum2", "gpt_sdpa-bf16", "gpt_sdpa-adamw", "gpt_sdpa_BeqT-sgd",
                 "lstm_bf_tag-accum4", "gru_tbf_tag-accum2", "cnn_bn-clip", "lstm_tbf_cls-sgd"):
        assert must in ids
    for c in W.CELLS:
        wl, pr = W.WORKLOADS[c.workload], W.PRACTICES[c.practice]
        assert wl.batch % pr.accum == 0, c.id
        if pr.autocast == torch.float16:
            assert not any(isinstance(m, nn.LSTM) for m in wl.build().modules()), \
                f"{c.id}: fp16 autocast of nn.LSTM is not supported on CPU"
        if wl.name == "frozen_sparse":
            assert pr.optimizer == "sgd", "sparse gradients: SGD only"


# ---------------------------------------------------------------------- the reference
def _record(wl, state, micro, rngs=None, names=None):
    names = names or [n for n, p in wl.build().named_parameters() if p.requires_grad]
    dim = sum(state[n].numel() for n in names)
    return W.StepRecord(row={}, names=names, covered=names, dim=dim, lr=0.05, state=state, micro=micro, rngs=rngs,
                        applied={}, max_norm=None)


@pytest.mark.parametrize("name", ["gpt_sdpa_nodrop", "vit", "frozen_sparse"])
def test_func_and_graph_references_agree(name):
    """vmap(grad) and the one-forward autograd.grad loop give the same per-sample gradients."""
    wl = W.WORKLOADS[name]
    model = wl.build()
    state = W._clone_state(model)
    micro = W.split_batch(*wl.data(wl.batch, 5), 2, wl.batch_dim, wl.ydim)
    rec = _record(wl, state, micro)
    Gf, gf = W.reference_grads(wl, rec, method="func")
    Gg, gg = W.reference_grads(wl, rec, method="graph")
    assert Gf.shape == (wl.batch, rec.dim)
    assert torch.allclose(Gf, Gg, rtol=1e-9, atol=1e-12)
    # the mean of the per-sample gradients is the batch gradient (mean-of-means loss)
    assert torch.allclose(Gf.mean(0), gf, rtol=1e-9, atol=1e-12)


def test_graph_reference_replays_the_dropout_masks():
    """With dropout, the graph reference replays the RNG state: its mean gradient is the training gradient;
    without the replay (other masks) it is not."""
    wl = W.WORKLOADS["gpt_sdpa"]
    torch.manual_seed(3)
    model = wl.build()
    state = W._clone_state(model)
    (x,), y = wl.data(wl.batch, 5)
    rng = torch.get_rng_state()
    wl.loss(model(x), y).backward()
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()
    rec = _record(wl, state, [((x,), y)], rngs=[rng])
    G, gall = W.reference_grads(wl, rec)
    assert float((G.mean(0) - g).norm() / g.norm()) < 1e-5
    assert float((gall - g).norm() / g.norm()) < 1e-5
    torch.manual_seed(99)
    other = _record(wl, state, [((x,), y)], rngs=[torch.get_rng_state()])
    G2, _ = W.reference_grads(wl, other)
    assert float((G2.mean(0) - g).norm() / g.norm()) > 1e-2  # negative control


def test_batchnorm_reference_holds_the_statistics_fixed():
    """Fixed statistics: the per-sample gradients of the BatchNorm's own and downstream parameters average to
    the true batch gradient; those of the parameters upstream of it do not (they are coupled)."""
    wl = W.WORKLOADS["cnn_bn"]
    torch.manual_seed(0)
    model = wl.build()
    state = W._clone_state(model)
    micro = [wl.data(wl.batch, 5)]
    rec = _record(wl, state, micro, rngs=[torch.get_rng_state()])
    G, gall = W.reference_grads(wl, rec)
    sl = W._slices(rec)
    for n, (lo, hi) in sl.items():
        err = float((G[:, lo:hi].mean(0) - gall[lo:hi]).norm() / gall[lo:hi].norm())
        if n in wl.coupled:
            assert err > 1e-3, n
        else:
            assert err < 1e-9, n


def test_reference_formulas_on_a_hand_example():
    """tr_sigma, |G|^2, b_simple, D, C, C_sgd and the clip scaling of reference() on 3 samples in 2 dims."""
    G = torch.tensor([[1.0, 0.0], [0.0, 2.0], [2.0, 1.0]], dtype=torch.float64)
    gbar = G.mean(0)  # (1, 1)
    state = {"w": torch.zeros(2)}
    rec = W.StepRecord(row={}, names=["w"], covered=["w"], dim=2, lr=0.1, state=state, micro=[], rngs=None,
                       applied={}, max_norm=None)
    ref = W.reference(None, rec, G, gbar)
    m2 = (1 + 4 + 5) / 3
    tr = 3 / 2 * (m2 - 2.0)
    assert ref["tr_sigma"] == pytest.approx(tr) and ref["grad_sq_norm_unbiased"] == pytest.approx(2 - tr / 3)
    assert ref["b_simple"] == pytest.approx(tr / (2 - tr / 3))
    D = 0.1 * tr / (2 * 3 * 2)
    assert ref["D"] == pytest.approx(D) and ref["C"] == pytest.approx(2 / (D * 2))
    assert ref["C_sgd"] == pytest.approx(2 / (0.1 / 3))
    rec.max_norm = 0.5 * math.sqrt(2)
    clipped = W.reference(None, rec, G, gbar)
    c = clipped["clip_coef"]
    assert c == pytest.approx(0.5, rel=1e-5)
    for k in ("tr_sigma", "grad_sq_norm_unbiased", "D", "C_sgd", "grad_sq_norm"):
        assert clipped[k] == pytest.approx(c * c * ref[k])
    for k in ("b_simple", "C"):
        assert clipped[k] == pytest.approx(ref[k])


def test_compare_names_the_quantity_and_the_error():
    """Negative control of the tolerance check: a 3% error in one quantity fails a 2% cell, naming it."""
    ref = {"grad_sq_norm": 2.0, "tr_sigma": 1.0, "grad_sq_norm_unbiased": 1.5, "b_simple": 0.6667, "D": 0.01,
           "C": 3.0, "C_sgd": 40.0, "noise_coverage": 1.0, "d_cov": 10, "d": 10}
    row = {k: v for k, v in ref.items() if k not in ("d_cov", "d")}
    assert W.compare(row, ref, 0.02) == []
    row["tr_sigma"] = 1.03
    row["noise_coverage"] = 0.5
    problems = W.compare(row, ref, 0.02)
    assert len(problems) == 2
    assert problems[0].startswith("tr_sigma: monitor 1.03 vs reference 1") and "+3.0%" in problems[0]
    assert problems[1].startswith("noise_coverage")
    assert W.compare(row, ref, 0.05)[0].startswith("noise_coverage")
    row.pop("D")
    assert any(p.startswith("D: monitor None") for p in W.compare(row, ref, 0.05))


def test_recompile_warning_is_caught():
    """Negative control of the torch.compile cells: dynamo's recompile-limit warning (a log record of a logger
    that does not propagate to "torch") is seen by capture_messages and flagged."""
    if not _compile_available():
        pytest.skip("torch.compile is not available")
    import torch._dynamo

    def f(x):
        return x * 2

    torch._dynamo.reset()
    g = torch.compile(f, backend="eager", dynamic=False)
    with W.capture_messages() as messages:
        for n in range(1, 11):  # a new static shape each call: past the recompile limit of 8
            g(torch.ones(n))
    torch._dynamo.reset()
    assert W.warning_problems(messages, optimizer=None, coupling=False, compiled=True)
    assert W.warning_problems([], optimizer=None, coupling=False, compiled=True) == []


def test_warning_expectations():
    """The adaptive-optimizer warning is expected exactly once, the BatchNorm coupling warning at least once."""
    msg = "AdamW is an adaptive optimizer: D, C and C_sgd are the SGD-equivalent quantities"
    ok = dict(optimizer="AdamW", coupling=False, compiled=False)
    assert W.warning_problems([msg], **ok) == []
    assert W.warning_problems([], **ok) and W.warning_problems([msg, msg], **ok)
    assert W.warning_problems(["Adam is adaptive"], **ok)  # names another optimizer
    assert W.warning_problems(["AdamW: lr is 0.001"], **ok)  # does not say it is adaptive
    assert W.warning_problems(["AdamW preconditions each coordinate: SGD-equivalent D"], **ok) == []
    bn = dict(optimizer=None, coupling=True, compiled=False)
    assert W.warning_problems(["BatchNorm2d '1' in train mode couples the samples: 0.weight excluded"], **bn) == []
    assert W.warning_problems(["noise_coverage 0.83 < 0.9"], **bn)


# ---------------------------------------------------------------------- steps tier 0 does not measure
SPARSE_CELLS = ["gpt_sdpa-accum2", "gpt_mha-clip", "lstm_bf_tag-accum4", "gru_bf_cls-fp16_scaler", "compiled_mlp-sgd"]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("cell_id", SPARSE_CELLS)
def test_cell_after_unmeasured_steps(cell_id, tmp_path, monkeypatch):
    """``tier0_every=3, tier1_every=4``: steps 1 and 2 are not measured at all (no norms, no count hooks, the
    engine unhooked); the tier-1 step after them (step 4; step 8 for a compiled model) still matches the
    per-sample reference in every quantity."""
    import dataclasses

    _needs(cell_id)
    cells = [dataclasses.replace(c, steps=9 if W.WORKLOADS[c.workload].compiled else 5) for c in W.CELLS]
    monkeypatch.setattr(W, "CELLS", cells)
    # one row per step; track_update=False: a row's last step (every step here) is not measured for the update norm
    monkeypatch.setattr(W, "MONITOR_KWARGS", dict(log_every=1, tier1_every=4, tier0_every=3, track_update=False,
                                                  conv_estimator="exact"))
    info: dict = {}
    problems = W.check_cell(cell_id, str(tmp_path), info)
    assert not problems, f"{cell_id}:\n  " + "\n  ".join(problems)
    hist = info["rec"].history
    # steps 0 (tiers 0 and 1), 3 (tier 0) and 4 (tier 1) measured, 1 and 2 not
    assert [r.get("grad_sq_steps") for r in hist[:5]] == [1, None, None, 1, 1]
    assert all(r.get("loss") is not None for r in hist)


@pytest.mark.parametrize("name", ["lstm_dropout", "gpt_ckpt_reentrant", "cnn_bn", "gpt_mha"])
def test_monitoring_leaves_training_bit_for_bit(name):
    """The monitor observes: with tier 1 on every step (the per-sample engine replays recurrent dropout masks and runs
    reentrant checkpoint segments itself), the model trains to the same weights and buffers, and the global random
    stream ends where it would have, as without the monitor."""
    wl = W.WORKLOADS[name]
    batches = [wl.data(wl.batch, 10 + s) for s in range(6)]
    plain, monitored = W.train_monitored_and_not(wl.build, batches, wl.loss, 0.05, dict(tier1_every=1, log_every=3),
                                                 lambda rows: all(r.get("noise_coverage") for r in rows))
    assert W.same_training(plain, monitored)
