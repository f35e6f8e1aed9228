"""practical_algorithm: the documents' recipe (literal and bounded) against SGD and SGD at the range
test's lr, with verdicts that follow from paired accuracy differences."""
import numpy as np
import pytest

from hhld.validate.base import REGISTRY, VERDICTS, Cell
from hhld.validate.experiments import load_all
from hhld.validate.experiments.practical_algorithm import ARMS, _verdict

load_all()


def test_verdict_rule():
    ok = np.ones(5, bool)
    assert _verdict(np.array([0.05, 0.04, 0.06, 0.05, 0.055]), ok) == "holds"
    assert _verdict(np.array([-0.05, -0.04, -0.06, -0.05, -0.055]), ok) == "fails"
    assert _verdict(np.array([0.001, -0.001, 0.002, 0.0, -0.002]), ok) == "fails"   # no useful gain
    assert _verdict(np.array([0.08, -0.05, 0.1, -0.02, 0.03]), ok) == "inconclusive"
    assert _verdict(np.array([0.05, 0.04, 0.06, 0.05, 0.055]), np.array([True] * 4 + [False])) == "fails"


@pytest.fixture(scope="module")
def smallest():
    e = REGISTRY["practical_algorithm"]
    cfg = e.config("smallest")
    cells = e.cells(cfg, cfg.seeds)
    assert {c.key["arm"] for c in cells} == set(ARMS)
    return e, cfg, [(c, e.run_cell(cfg, c)) for c in cells]


def test_literal_recipe_diverges_and_the_rows_say_so(smallest):
    e, cfg, results = smallest
    lit = [r for c, r in results if c.key["arm"] == "documents"]
    assert all(not r["finite"] and r["max_lr"] > 10 * cfg.lr for r in lit)  # lr x1.5 at every step with C > 10
    bounded = [r for c, r in results if c.key["arm"] == "documents_bounded"]
    assert all(r["finite"] and r["max_lr"] <= 10 * cfg.lr * (1 + 1e-12) for r in bounded)
    rng_lr = [r["lr"] for c, r in results if c.key["arm"] == "sgd_range_test"]
    assert all(lr > 0 for lr in rng_lr)
    rep = e.summarize(cfg, results)
    assert len(rep.rows) == 4 and all(r.verdict in VERDICTS for r in rep.rows)
    literal_rows = [r for r in rep.rows if "(literal)" in r.prediction]
    assert [r.verdict for r in literal_rows] == ["fails", "fails"] and all("diverged 2/2" in r.error
                                                                           for r in literal_rows)
    assert rep.figures and rep.data["mlp_digits"]["accuracy"]["sgd"]


def test_cell_is_a_pure_function():
    e = REGISTRY["practical_algorithm"]
    cfg = e.config("smallest").replace(epochs=0.3)
    c = Cell(e.name, {"task": "mlp_digits", "arm": "documents_bounded"}, 3)
    assert e.run_cell(cfg, c) == e.run_cell(cfg, c)
