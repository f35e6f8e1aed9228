"""mon.plot(): the figure of a run (headless)."""
import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch import nn

from hhld.torch import Monitor, plot_monitor

from test_monitor import data, tiny


def _run(steps=12, **kw):
    torch.manual_seed(0)
    model, lf = tiny(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, log_every=2, tier1_every=2, **kw)
    for k in range(steps):
        x, y = data(8, seed=k)
        opt.zero_grad(); loss = lf(model(x), y); loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
        opt.step(); mon.step(loss)
    return mon


def test_plot_has_the_four_panels_and_saves(tmp_path):
    mon = _run()
    fig = mon.plot(tmp_path / "m.png", title="a run")
    assert (tmp_path / "m.png").stat().st_size > 10_000
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels[:4] == ["loss", "consolidation ratio", "tr Σ", "per-sample coverage"]
    # clipping happened: the clip coefficient is drawn; the first regime label is not drawn as a change
    assert any(line.get_label() == "clip coefficient" for line in fig.axes[3].get_lines())
    assert any(e.get("initial") for e in mon.events if e["event"] == "regime")
    assert not mon.history[0]["regime_changed"]
    # the same figure from the rows (a list or a DataFrame)
    plot_monitor(mon.to_dataframe())
    mon.close()


def test_plot_of_nothing_says_so():
    with pytest.raises(ValueError, match="no rows to plot"):
        plot_monitor([])
