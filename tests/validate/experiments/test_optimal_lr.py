"""optimal_lr: the prediction is finite and positive, the grid trains, the optimum is inside the grid."""
from __future__ import annotations

import math


def test_optimal_lr_smallest(run_smallest):
    cfg, results, rep = run_smallest("optimal_lr", through_json=True)
    pred = next(r for c, r in results if c.key["kind"] == "predict")
    assert pred["a"] > 0 and math.isfinite(pred["a"])  # eta_opt(lr) = sqrt(lr a) finite and positive
    assert pred["hessian_trace"] > 0 and pred["D_per_lr"] > 0
    assert pred["range_suggested"] is not None and pred["range_suggested"] > 0
    grid = sorted((c.key["lr"], r["test_loss"]) for c, r in results if c.key["kind"] == "grid")
    assert all(r["finite"] for c, r in results if c.key["kind"] == "grid")
    # training does something: the best grid point improves on the initial loss
    init = next(r["init_loss"] for c, r in results if c.key["kind"] == "grid")
    assert min(v for _, v in grid) < 0.8 * init
    data = rep.data["mlp_digits"]
    assert min(cfg.lr_grid) <= data["lr_opt"] <= max(cfg.lr_grid)
    for label, p in data["predictions"].items():
        assert p["value"] > 0 and math.isfinite(p["abs_log10_ratio"]), label
