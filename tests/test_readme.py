"""The README's Python quickstarts run as written (the monitor's, which uses the reader's own model and
data, after a prelude that defines them)."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

PRELUDE = {
    "from hhld.torch import Monitor": '''
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
loss_fn = nn.CrossEntropyLoss()
X, Y = torch.randn(1600, 8), torch.randint(0, 3, (1600,))
loader = [(X[i:i + 32], Y[i:i + 32]) for i in range(0, 1600, 32)]
''',
}


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_quickstarts():
    assert len(_blocks()) >= 2


@pytest.mark.parametrize("i", range(len(_blocks())))
def test_readme_block_runs(i, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    code = _blocks()[i]
    prelude = next((p for key, p in PRELUDE.items() if key in code), "")
    ns: dict = {}
    exec(compile(prelude + code, f"README.md block {i + 1}", "exec"), ns)  # noqa: S102 - the README's own code
    if "mon.plot(" in code:
        assert (tmp_path / "monitor.png").stat().st_size > 10_000
        assert len(ns["df"]) == 2  # 50 steps, a row every 25
    if "obs[0].rate()" in code:
        out = capsys.readouterr().out
        rate, se = ns["obs"][0].rate()
        kramers = ns["hhld"].theory.kramers_rate(ns["lw"], ns["np"].array([-1.0, 0.0]), D=0.3).rate
        assert f"escape rate {rate:.4f}" in out and f"Kramers (leading order in D) {kramers:.4f}" in out
        assert 0 < se < 0.1 * rate and 0.5 < rate / kramers < 2.0  # same scale; Kramers is only leading order
