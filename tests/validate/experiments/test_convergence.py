"""convergence: the KL decay rate is Bakry-Emery's for quadratics and bounded by it elsewhere."""
from __future__ import annotations


def test_convergence_rate_is_bakry_emery_for_quadratic(run_smallest):
    cfg, results, rep = run_smallest("convergence")
    for x in rep.data["runs"]:
        if x["landscape"] == "quadratic":
            assert abs(x["rate"] - x["bakry_emery"]) / x["bakry_emery"] < 0.02
        else:
            assert x["rate"] >= 0.97 * x["bakry_emery"]
        assert x["bakry_emery_bound_ok"]
