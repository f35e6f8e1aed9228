"""The report's text: no "nan ± nan" / "inf%", a readable verdict line, real figure captions."""
from __future__ import annotations

import math

import pytest

from hhld.validate.base import Row, clean_nonfinite
from hhld.validate.report import caption, verdict_line


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


def test_verdict_line_is_readable():
    assert verdict_line({"fails": 38, "holds": 17, "partly": 6, "inconclusive": 5}) == \
        "17 holds, 38 fails, 6 partly, 5 inconclusive (66 rows)"
    assert verdict_line({}) == "no verdicts (0 rows)"


def test_caption_from_the_experiment_then_the_titles_then_the_name():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.subplots(1, 2)
    ax[0].set_title("escape rate vs 1/D")
    ax[1].set_title("residuals")
    assert caption("Tunneling", "rates", fig) == "Tunneling: escape rate vs 1/D; residuals"
    fig.suptitle("Escape rates of the 1-D double well")
    assert caption("Tunneling", "rates", fig) == "Tunneling: Escape rates of the 1-D double well"
    assert caption("Tunneling", "rates", fig, {"rates": "Measured rates."}) == "Measured rates."
    assert caption("Tunneling", "rate_vs_D", Figure()) == "Tunneling: rate vs D"
