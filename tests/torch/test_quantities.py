"""Contract tests over every built-in monitor quantity (one table, like optax's tests over all transforms)."""
import dataclasses
import math

import pytest
import torch
from torch import nn

from hhld.torch import Monitor
from hhld.torch.quantities import (NEEDS, QUANTITY_TABLE, IntervalContext, Quantity, StepContext, robust_norms)

from test_monitor import data, tiny


def build(name, **over):
    cls, kw = QUANTITY_TABLE[name]
    kw = dict(kw)
    if name in ("curvature", "probe_noise"):
        x, y = data()
        kw.update(loss_fn=nn.CrossEntropyLoss(), batch=(x, y), every=1)
    kw.update(over)
    return cls(**kw)


def run_monitor(q, steps=4):
    """A short run with ``q`` as the monitor's only extra quantity (tier 1 every step)."""
    torch.manual_seed(0)
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=2, tier1_every=1, window=None, extra_quantities=[q])
    for k in range(steps):
        x, y = data(8, seed=k)
        opt.zero_grad(); loss = lf(model(x), y); loss.backward(); opt.step(); mon.step(loss)
    mon.close()
    return mon


@pytest.mark.parametrize("name", sorted(QUANTITY_TABLE))
def test_quantity_contract(name):
    q = build(name)
    assert isinstance(q, Quantity) and isinstance(q.name, str) and q.tier in (0, 1, 2)
    assert q.needs <= NEEDS, f"{name} declares unknown needs {q.needs - NEEDS}"
    # a schedule: every must be a positive integer
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="every must be an integer >= 1"):
            build(name, every=bad)
    # finalize of an interval without its values: an empty dict or a row of plain values, never a crash
    empty = IntervalContext(step=0, sums={}, counts={}, values={}, dim=10, D_given=None)
    assert isinstance(q.finalize(empty), dict)
    # inside a monitor: every value it adds to a row is a finite float, an int, a string, a bool or None
    mon = run_monitor(build(name))
    for row in mon.history:
        for k, v in row.items():
            assert v is None or isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v)), (k, v)


@pytest.mark.parametrize("name", sorted(QUANTITY_TABLE))
def test_quantity_state_round_trips_as_plain_data(name):
    """Every quantity's state_dict (what Monitor.state_dict carries) survives torch.save / torch.load(weights_only=True)
    and a fresh quantity given it returns the same state; the base class refuses state it does not keep."""
    import io

    q = build(name)
    run_monitor(q, steps=3)  # some state (an open uncertainty window, the curvature's generator, ...)
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = build(name)
    fresh.load_state_dict(state)

    def same(a, b):
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and torch.equal(a, b)
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b

    assert same(fresh.state_dict(), q.state_dict())
    if type(q).state_dict is Quantity.state_dict:
        with pytest.raises(ValueError, match="carries no state"):
            fresh.load_state_dict({"x": 1})


def test_step_and_interval_contexts_are_typed_records():
    fields = {f.name for f in dataclasses.fields(StepContext)}
    assert {"grads", "grad_norms", "grad_sq", "per_sample", "clip", "lr", "batch_size"} <= fields
    assert "extra" not in fields  # typed fields, no string-keyed bag
    with pytest.raises(dataclasses.FrozenInstanceError):
        StepContext(step=0, names=(), params=(), grads=(), lr=0.1, batch_size=1, n_micro=1, dim=0,
                    grad_norms=torch.zeros(0), grad_sq=torch.zeros(())).step = 1


def test_a_new_quantity_is_one_class_and_declares_its_needs():
    class GradMax(Quantity):
        name = "grad_max"
        needs = frozenset({"grad_norms"})

        def pre_step(self, ctx):
            return {"grad_max_norm": ctx.grad_norms.max()}

        def finalize(self, ictx):
            n = ictx.counts.get("grad_max_norm", 0)
            return {"grad_max_norm": ictx.sums["grad_max_norm"] / n} if n else {}

    mon = run_monitor(GradMax())
    assert all(r["grad_max_norm"] > 0 for r in mon.history)


def test_per_sample_engine_runs_only_when_a_due_quantity_needs_it():
    model = tiny()
    mon = Monitor(model, torch.optim.SGD(model.parameters(), lr=0.1), tier1_every=None)
    assert mon.engine is None  # nothing needs per-sample norms: no interception at all
    mon.close()
    mon = Monitor(model, torch.optim.SGD(model.parameters(), lr=0.1), tier1_every=3)
    assert mon.engine is not None and mon.engine.enabled  # step 0 is a tier-1 step
    mon.close()


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e25])
def test_robust_norms_neither_underflow_nor_overflow(scale):
    ts = [torch.full((7,), 3.0) * scale, torch.full((2, 2), -4.0) * scale, torch.zeros(3)]
    n = robust_norms(ts)
    assert n.dtype == torch.float64
    assert float(n[0]) == pytest.approx(3.0 * math.sqrt(7) * scale, rel=1e-6)
    assert float(n[1]) == pytest.approx(8.0 * scale, rel=1e-6)
    assert float(n[2]) == 0.0
