"""tunneling_rate: the control compares the ensemble estimator with its own exact expectation."""
import math

import numpy as np
import pytest

from hhld import theory as T
from hhld.landscapes import DoubleWell, double_well_1d
from hhld.validate.base import REGISTRY, Cell
from hhld.validate.experiments import load_all
from hhld.validate.experiments.tunneling_rate import (bonferroni_z, exact_core_rate, exact_estimator_rate,
                                                      measure_escape_rate, monitoring_shift)

load_all()


def test_exact_rates():
    # the continuity-correction constant -zeta(1/2)/sqrt(2 pi)
    assert monitoring_shift(0.5, 0.01) / math.sqrt(2 * 0.5 * 0.01) == pytest.approx(0.5825971579, rel=1e-9)
    k1 = exact_core_rate("1d", 0.5, 0.5, 50)
    assert k1 == pytest.approx(1 / T.mean_first_passage_time_1d(double_well_1d(), -0.5, 0.5, 0.5), rel=1e-4)
    assert exact_core_rate("2d", 0.5, 0.5, 25) == pytest.approx(k1, rel=2e-3)  # theta_1 moves on its own
    short, long = exact_estimator_rate(0.5, 0.5, 60.0, 20), exact_estimator_rate(0.5, 0.5, 4000.0, 20)
    assert short < long and long == pytest.approx(k1, rel=2e-3)
    assert bonferroni_z(1) == pytest.approx(1.96, abs=1e-3) and bonferroni_z(8) > 2.7


def test_ensemble_matches_its_exact_expectation_only_with_the_time_step_correction():
    D, dt, t_max = 0.5, 0.01, 60.0
    r = measure_escape_rate(DoubleWell(dim=1), D, 2000, t_max, dt, (0, 1))
    with_dt = exact_estimator_rate(D, 0.5 + monitoring_shift(D, dt), t_max, 20)
    dt_zero = exact_estimator_rate(D, 0.5, t_max, 20)
    assert r["dispersion"] > 1.0
    assert abs(r["rate"] / with_dt - 1) < 0.02 + 3 * r["rate_se"] / with_dt
    assert abs(r["rate"] / dt_zero - 1) > 3 * r["rate_se"] / dt_zero  # negative control: the bias is real


def test_summary_control_rows_hold_and_fail_when_the_rate_is_off():
    e = REGISTRY["tunneling_rate"]
    cfg = e.config("smallest")
    results = [(c, e.run_cell(cfg, c)) for c in e.cells(cfg, cfg.seeds)]
    rep = e.summarize(cfg, results)
    ctl = [r for r in rep.rows if "its exact expectation at this dt (control)" in r.prediction]
    bias = [r for r in rep.rows if "time-step bias" in r.prediction]
    assert ctl and all(r.verdict == "holds" for r in ctl)
    assert bias and all(r.verdict == "holds" for r in bias)
    off = [(c, dict(r, transitions=int(1.15 * r["transitions"]))) for c, r in results]
    rep_off = e.summarize(cfg, off)
    assert [r.verdict for r in rep_off.rows if "(control)" in r.prediction] == ["fails"]
    d = rep.data["1d"]
    assert np.all(np.asarray(d["core_rate"]) > np.asarray(d["fp_rate"]))  # the core rate is not lambda_1/2


def test_tunneling_rate_1d_matches_fp_at_D_025():
    e = REGISTRY["tunneling_rate"]
    cfg = e.config("smallest")
    r = e.run_cell(cfg, Cell("tunneling_rate", {"landscape": "1d", "D": 0.25}, 0))
    assert r["transitions"] > 200
    assert abs(r["rate"] - r["fp_rate"]) / r["fp_rate"] < 0.10
    # Kramers is the small-D asymptote: within 15% here
    assert abs(r["kramers_rate"] - r["fp_rate"]) / r["fp_rate"] < 0.15


def test_tunneling_summary_fits(run_smallest, find_row):
    cfg, results, rep = run_smallest("tunneling_rate")
    d = rep.data["1d"]
    assert d["S_straight"] == 0.0 and d["S_path"] > 0  # documents' code form: ΔL = 0 between equal minima
    # Arrhenius slope of the (noise-free) FP rates close to −ΔL = −1
    assert -1.3 < d["fp_fit_inv_D"]["slope"] < -0.8
    assert find_row(rep, "1d: documents' code P").verdict == "fails"
