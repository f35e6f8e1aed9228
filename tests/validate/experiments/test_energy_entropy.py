"""energy_entropy: the free-energy identity holds; the documents' Theorem 2 has counterexamples."""
from __future__ import annotations


def test_energy_entropy_identity_and_theorem2_counterexample(run_smallest, find_row):
    cfg, results, rep = run_smallest("energy_entropy")
    assert rep.data["identity_max_rel_err"] < 1e-6
    assert rep.data["fraction_negative_dE"] > 0  # densities narrower than ρ* have ΔE < 0 < KL
    assert find_row(rep, "E[ρ] − E[ρ*] ≥").verdict in ("fails", "partly")
