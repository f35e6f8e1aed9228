"""grokking: the online predictors (replayed), the smallest run groks, plan fields, the other models."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hhld.validate.base import REGISTRY, Cell
from hhld.validate.experiments.grokking import Crossing, PeakDrop, SharpDrop, make_predictors, score


def _replay(pred, epochs, values, key="C"):
    for e, v in zip(epochs, values):
        pred.update(e, {key: v})
    return pred.commit


def test_crossing_fires_at_first_crossing_either_direction():
    assert _replay(Crossing("c", "C", 1.0), [0, 5, 10, 15], [10.0, 3.0, 0.8, 5.0]) == 10
    assert _replay(Crossing("c", "C", 1.0), [0, 5, 10], [0.1, 0.5, 2.0]) == 10
    assert _replay(Crossing("c", "C", 1.0), [0, 5, 10], [10.0, 3.0, 2.0]) is None


def test_sharp_drop_needs_history_and_is_online():
    ep = list(range(0, 200, 5))
    vals = [100.0] * 20 + [1.0] * 20  # a 100x drop at epoch 100
    c = _replay(SharpDrop("d", "C", 10.0, 50), ep, vals)
    assert c is not None and 100 <= c <= 110
    # online: replaying only the prefix up to the commit gives the same commit
    k = ep.index(c) + 1
    assert _replay(SharpDrop("d", "C", 10.0, 50), ep[:k], vals[:k]) == c
    # an early drop inside the burn-in window does not fire
    assert _replay(SharpDrop("d", "C", 10.0, 50), ep[:8], [100.0, 100.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]) is None


def test_peak_drop_baseline_and_score():
    assert _replay(PeakDrop("p", "L", 0.1), [0, 1, 2, 3], [1.0, 2.0, 1.9, 1.7], key="L") == 3
    s = score([90, None, 110], [100, 100, 100])
    assert s["n_runs"] == 3 and s["fired"] == 2 and s["before"] == 1
    assert s["median_abs_err"] == 10 and s["leads"] == [10, -10]


@pytest.mark.slow
def test_grokking_smallest_groks_and_predictors_are_online(run_smallest, find_row):
    cfg, results, rep = run_smallest("grokking", through_json=True)
    (cell, r), = results
    max_epochs = cell.key["max_epochs"]
    # the quadratic MLP groks on the small problem within the budget
    assert r["t95"] is not None and r["t95"] <= max_epochs
    assert r["t50"] is not None and r["t50"] <= r["t95"]
    assert r["t_memorize"] is not None and r["t_memorize"] < r["t95"]  # memorise first, generalise later
    s = r["series"]
    assert min(s["grad_sq"]) > 0 and all(np.isfinite(s["C"]))
    # every predictor either says none or commits at an evaluated epoch it has seen
    for name, c in r["commits"].items():
        assert c is None or c in s["epoch"], name
    # replaying the recorded series through fresh predictors gives the same commits (online)
    preds = make_predictors(cfg.drop_window)
    for i, e in enumerate(s["epoch"]):
        obs = {k: v[i] for k, v in s.items()}
        for p in preds:
            p.update(e, obs)
    assert {p.name: p.commit for p in preds} == r["commits"]
    # the 5% baseline commits strictly before the 95% event
    assert r["commits"]["test acc passes 5%"] < r["t95"]
    find_row(rep, "Grokking epoch predicted from C(t)")
    find_row(rep, "Observed grokking epoch")
    assert not [x for x in rep.rows if " only (best documents' rule" in x.prediction]  # one model: no per-model rows

    # two models: each gets its own score row; a rule exact on one model only is scored per model
    from hhld.validate.base import Cell

    r2 = json.loads(json.dumps(r))
    r2["commits"] = {k: None for k in r2["commits"]}
    r2["commits"]["C drops x3"] = r2["t95"] - 1  # one epoch early: within any tolerance, before the event
    other = Cell(cell.experiment, {**cell.key, "model": "transformer"}, cell.seed)
    rep2 = REGISTRY["grokking"].summarize(cfg, [(cell, r), (other, r2)])
    per = {x.prediction: x for x in rep2.rows if " only (best documents' rule" in x.prediction}
    assert len(per) == 2
    tr = next(x for p, x in per.items() if "transformer only" in p)
    assert "C drops x3" in tr.prediction and tr.verdict == "holds" and "before t95 in 1/1" in tr.error
    mq = next(x for p, x in per.items() if "mlp_quadratic_mse only" in p)
    assert "over the 1 grokking runs of mlp_quadratic_mse" in mq.notes


@pytest.mark.parametrize("model", ["transformer", "mlp_relu_ce"])
def test_grokking_other_models_run(model):
    """The full-scale models go through the same loop (a few epochs on a tiny problem)."""
    from hhld.validate.experiments.grokking import GrokkingConfig, run_grokking

    cfg = GrokkingConfig(p=13, train_frac=0.5, width=16)
    r = run_grokking(cfg, model, 1e-3, 1.0, max_epochs=4, eval_every=2, seed=0)
    assert r["series"]["epoch"] == [0, 2, 4]
    assert all(math.isfinite(c) and c > 0 for c in r["series"]["C"])
    assert set(r["commits"]) == {p.name for p in make_predictors(cfg.drop_window)}


@pytest.mark.slow
def test_grokking_plan_fields_are_not_read_by_a_cell():
    from hhld.validate.experiments.grokking import GrokkingConfig

    cfg = GrokkingConfig.full()
    # one more transformer seed or a new tolerance keeps every finished cell's key
    cell = Cell("grokking", {"model": "transformer", "lr": 1e-3, "wd": 1.0, "max_epochs": 20000,
                             "eval_every": 100}, 0)
    k = cell.cache_key(cfg, "v")
    assert cell.cache_key(cfg.replace(transformer_seeds=3, rel_tol=0.1), "v") == k
    assert cell.cache_key(cfg.replace(drop_window=50), "v") != k  # the predictors read drop_window
    # and a cell computes the same with every plan field changed
    small = GrokkingConfig.smallest()
    (c,) = REGISTRY["grokking"].cells(small, small.seeds)
    other = small.replace(seeds=(4, 5), runs=(), transformer_seeds=9, rel_tol=0.9, partly_tol=0.99,
                          min_before_frac=0.0)
    a = REGISTRY["grokking"].run_cell(small, c)
    b = REGISTRY["grokking"].run_cell(other, c)
    assert json.dumps(a, default=str) == json.dumps(b, default=str)
