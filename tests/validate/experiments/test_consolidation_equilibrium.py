"""consolidation_equilibrium: C equals the mean Laplacian over d at equilibrium, independent of D."""
from __future__ import annotations


def test_consolidation_equals_mean_laplacian_over_d(run_smallest):
    cfg, results, rep = run_smallest("consolidation_equilibrium")
    for c, r in results:
        assert abs(r["C"] - r["lap_over_d"]) / r["lap_over_d"] < 0.05 + 2 * r["C_se"] / r["lap_over_d"]
        # negative control: a reference 15% larger fails the same tolerance
        wrong = 1.15 * r["lap_over_d"]
        assert abs(r["C"] - wrong) / wrong > 0.05 + 2 * r["C_se"] / wrong
    q = [r["C"] for c, r in results if c.key["landscape"] == "example2_quadratic"]
    assert max(q) / min(q) < 1.1  # independent of D
