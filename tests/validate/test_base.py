"""hhld.validate.base: cells and their cache keys, rows and their text, verdicts, the registry."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from hhld.validate.base import (REGISTRY, Cell, Experiment, ExperimentConfig, Row, clean_nonfinite,
                                get_experiment, relative_error, to_jsonable, verdict_within)


@pytest.mark.parametrize("measured, rel_tol, partly, unc, want", [
    (1.05, 0.1, None, None, "holds"),
    (1.15, 0.1, None, None, "fails"),
    (1.15, 0.1, 0.2, None, "partly"),
    (1.25, 0.1, 0.2, None, "fails"),
    (1.15, 0.1, None, 0.03, "holds"),   # 0.15 <= 0.1 + 2 x 0.03: two uncertainties of slack
    (1.17, 0.1, None, 0.03, "fails"),   # and no more
    (math.nan, 0.1, None, None, "inconclusive"),
    (1.0, 0.1, None, math.nan, "holds"),  # a non-finite uncertainty gives no slack
])
def test_verdict_within(measured, rel_tol, partly, unc, want):
    assert verdict_within(measured, 1.0, rel_tol, partly, unc) == want


def test_relative_error_and_jsonable():
    assert relative_error(1.1, -1.0) == pytest.approx(2.1)
    assert relative_error(0.0, 0.0) == 0.0 and relative_error(1e-9, 0.0) == math.inf

    @dataclass
    class P:
        a: tuple
        b: object

    out = to_jsonable({1: P((np.float32(0.5), np.arange(2)), np.int64(3))})
    assert out == {"1": {"a": [0.5, [0, 1]], "b": 3}} and json.dumps(out)
    with pytest.raises(TypeError, match="not JSON-able"):
        to_jsonable(object())


@dataclass(frozen=True)
class _Cfg(ExperimentConfig):
    n: int = 3
    tol: float = 0.1
    plan_fields = ("seeds", "tol")


def test_cache_key_covers_what_a_cell_reads_and_nothing_else():
    c = Cell("x", {"D": 0.1}, 0)
    k = c.cache_key(_Cfg(), "1")
    assert k == Cell.from_dict(json.loads(json.dumps(c.to_dict()))).cache_key(_Cfg(), "1")
    assert c.cache_key(_Cfg(tol=0.5, seeds=(0, 1, 2)), "1") == k          # plan fields only
    for other in (c.cache_key(_Cfg(n=4), "1"), c.cache_key(_Cfg(), "2"),
                  Cell("x", {"D": 0.2}, 0).cache_key(_Cfg(), "1"), Cell("x", {"D": 0.1}, 1).cache_key(_Cfg(), "1")):
        assert other != k
    with pytest.raises(TypeError, match="seed must be an int"):
        Cell("x", {}, 1.0)
    with pytest.raises(TypeError, match="not JSON-able"):
        Cell("x", {"f": object()}, 0)


def test_check_result_names_what_is_wrong():
    class E(Experiment):
        name = "_e"
        result_keys = ("rate",)

    e, cfg, c = E(), ExperimentConfig(), Cell("_e", {}, 0)
    e.check_result(cfg, c, {"rate": 1.0})
    for bad, match in [([], "a list, not a dict"), ({}, "empty dict"), ({1: 2}, "non-string keys"),
                       ({"x": 1}, r"lacks the keys \['rate'\]")]:
        with pytest.raises(ValueError, match=match):
            e.check_result(cfg, c, bad)


def test_unknown_experiment_and_scale_are_named():
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        get_experiment("nope")
    with pytest.raises(ValueError, match="scale must be 'quick', 'full' or 'smallest', got 'huge'"):
        ExperimentConfig.scale("huge")
    with pytest.raises(ValueError, match="verdict must be one of"):
        Row("p", "d", 1.0, None, "", "maybe")


@pytest.mark.parametrize("measured, unc, want", [
    (math.nan, math.nan, "— (the measurement is not finite (nan); see the notes)"),
    (None, None, "— (not measured)"),
    (1.5, math.nan, "1.5"),
    (1.5, 0.25, "1.5 ± 0.25"),
    ("text", None, "text"),
])
def test_measured_text_never_shows_nan(measured, unc, want):
    assert Row("p", "d", measured, unc, "", "inconclusive").measured_text() == want


def test_measured_text_gives_the_reason():
    row = Row("p", "d", math.nan, math.nan, "", "inconclusive", reason="no run grokked")
    assert row.measured_text() == "— (no run grokked)"


@pytest.mark.parametrize("text, want", [
    ("rel. err nan%", "rel. err —"),
    ("median |err| ∞%, before", "median |err| —, before"),
    ("lead nan ± nan ep", "lead — ep"),
    ("x = -inf", "x = —"),
    ("t95 ∞ (never reached)", "t95 ∞ (never reached)"),
    ("information and nanometres 3.1%", "information and nanometres 3.1%"),
])
def test_clean_nonfinite(text, want):
    assert clean_nonfinite(text) == want


def test_plan_fields_name_real_fields():
    from hhld.validate.experiments import load_all

    load_all()
    for name, exp in REGISTRY.items():
        fields = {f.name for f in dataclasses.fields(exp.config_cls)}
        assert set(exp.config_cls.plan_fields) <= fields, name


def test_registry_has_all_my_experiments():
    from hhld.validate.experiments import load_all

    load_all()
    for name in ("tunneling_rate", "uncertainty", "energy_entropy", "convergence", "phase_transition",
                 "consolidation_equilibrium", "dimension"):
        e = REGISTRY[name]
        for scale in ("quick", "full", "smallest"):
            cfg = e.config(scale)
            cells = e.cells(cfg, cfg.seeds)
            assert cells and len({(json.dumps(c.key, sort_keys=True), c.seed) for c in cells}) == len(cells)
