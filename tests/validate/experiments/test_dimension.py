"""dimension: the rate is the same in every d and equals its exact expectation (not Kramers)."""
import numpy as np

from hhld.validate.base import REGISTRY
from hhld.validate.experiments import load_all

load_all()


def test_control_against_the_exact_rate_and_kramers_is_leading_order():
    e = REGISTRY["dimension"]
    cfg = e.config("smallest")
    results = [(c, e.run_cell(cfg, c)) for c in e.cells(cfg, cfg.seeds)]
    rep = e.summarize(cfg, results)
    rows = {r.prediction.split(",")[0]: r for r in rep.rows}
    assert rows["Rate = its exact expectation at this dt"].verdict == "holds"
    assert rep.data["kramers_rate"][0] > 1.03 * rep.data["core_rate"]  # Kramers: leading order only
    off = [(c, dict(r, transitions=int(1.2 * r["transitions"]))) for c, r in results]
    rows_off = {r.prediction.split(",")[0]: r for r in e.summarize(cfg, off).rows}
    assert rows_off["Rate = its exact expectation at this dt"].verdict == "fails"
    assert np.allclose(rep.data["rate"], rep.data["estimator_rate_dt"], rtol=0.2)


def test_dimension_rate_flat_and_kramers(run_smallest, find_row):
    cfg, results, rep = run_smallest("dimension")
    rate = np.asarray(rep.data["rate"])
    se = np.asarray(rep.data["rate_se"])
    tol = 0.15 + 3 * np.hypot(se[0] / rate[0], se[-1] / rate[-1])
    assert abs(rate[-1] / rate[0] - 1) < tol
    # negative control: the documents' d-dependence (normalised at d = 1) fails the same flatness check
    doc = np.asarray(rep.data["documents_normalised"])
    assert abs(doc[-1] / doc[0] - 1) > tol
    assert find_row(rep, "Γ ∝ exp").verdict == "fails"
