"""uncertainty: the stationary product equals D on quadratics (Stein elsewhere), Example 3 measures curvature x hbar."""
from __future__ import annotations

import numpy as np


def test_uncertainty_quadratic_product_equals_D(run_smallest, find_row):
    cfg, results, rep = run_smallest("uncertainty")
    for c, r in results:
        if c.key["state"] == "quadratic":
            p = np.asarray(r["product"])
            assert np.all(np.abs(p - c.key["D"]) / c.key["D"] < 0.03)
        if c.key["state"] in ("coupled_quadratic", "double_well", "one_well"):
            assert np.all(np.abs(np.asarray(r["cov"]) - c.key["D"]) / c.key["D"] < 0.1)  # Stein
    assert find_row(rep, "Stationary Cov").verdict == "holds"
    ex3 = [r for c, r in results if c.key["state"] == "example3"][0]
    # Example 3 measures curvature × ħ: on Example 2's quadratic the product is λ_i·ħ
    q = ex3["quadratic50"]
    lam = np.asarray(q["curvature"])
    assert np.allclose(np.asarray(q["product"]), lam * ex3["hbar"], rtol=0.15)
