"""The report's text: no "nan ± nan" / "inf%", a readable verdict line, real figure captions."""
from __future__ import annotations

from hhld.validate.report import caption, verdict_line


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
