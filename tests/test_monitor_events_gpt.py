"""benchmarks/monitor_events_gpt.py: the drop definition, the event offsets and the detectors' replay on known
inputs, and a headless --quick run (both attention variants, both optimizers, both monitor settings)."""
import importlib.util
import inspect
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from hhld.observables import RegimeThresholds
from hhld.torch import Monitor

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "monitor_events_gpt.py"
_SIG = inspect.signature(Monitor).parameters
MONITOR_DEFAULTS = (_SIG["log_every"].default, _SIG["tier1_every"].default)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("monitor_events_gpt", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _logistic(n, mid, width, hi=2.8, lo=0.01):
    return [lo + (hi - lo) / (1 + math.exp((t - mid) / width)) for t in range(n)]


def test_drop_steps_of_a_known_curve(bench):
    # logistic fall centred at step 200: the level crossed at fraction q lies at mid + width * ln(q / (1 - q))
    curve = _logistic(500, 200, 8)
    d = bench.find_drop(curve, smooth_width=11, final=50)
    assert abs(d["t50"] - 200) <= 1
    assert abs(d["t10"] - (200 + 8 * math.log(0.1 / 0.9))) <= 2
    assert abs(d["t90"] - (200 + 8 * math.log(0.9 / 0.1))) <= 2
    # the centred smoothing does not move a symmetric drop in time (a trailing mean would delay it by ~5 steps)
    assert abs(bench.find_drop(curve, smooth_width=31, final=50)["t50"] - 200) <= 1


def test_no_drop_gives_no_steps(bench):
    flat = [2.8 + 0.01 * math.sin(t) for t in range(300)]
    d = bench.find_drop(flat, final=50)
    assert d["t10"] is None and d["t50"] is None and d["t90"] is None
    # negative control: the same code finds the drop once there is one
    assert bench.find_drop(flat[:150] + [0.01] * 150, final=50)["t50"] is not None


def test_offsets_sign_and_phase(bench):
    drop = {"t10": 90, "t50": 100, "t90": 110}
    evs = [{"step": s, "type": "phase_transition"} for s in (50, 95, 110, 140)]
    out = bench.offsets(evs, drop)
    assert [e["rel_t50"] for e in out] == [-50, -5, 10, 40]
    assert [e["phase"] for e in out] == ["before", "during", "during", "after"]


def _fake_monitor(rows, events=()):
    from hhld.torch.quantities import PhaseTransitionDetector, RegimeTracker

    return SimpleNamespace(history=rows, events=list(events), thresholds=RegimeThresholds(),
                           regime=RegimeTracker(RegimeThresholds(), 2), transitions=PhaseTransitionDetector(3.0))


def test_replay_of_the_detectors_per_source(bench):
    # C stays classical and flat; C_sgd falls 100 -> 3 (a phase transition; intermediate after the patience of
    # 2 rows) and on to 0.1 (a second one; quantum 2 rows later); the loss falls 10% once
    Csgd = [100, 100, 100, 3, 3, 0.1, 0.1, 0.1]
    loss = [2.8, 2.8, 2.8, 2.8, 2.0, 2.0, 2.0, 2.0]
    rows = [{"step": 10 * i + 9, "C": 20.0, "C_sgd": c, "loss": l, "regime_from": "C"}
            for i, (c, l) in enumerate(zip(Csgd, loss))]
    mon = _fake_monitor(rows, [{"step": 9, "event": "regime", "regime": "classical", "C": 20.0}])
    evs, checks = bench.events_by_source(mon)
    assert evs["C"] == [] and checks["replay_matches"] is True
    got = [(e["step"], e["type"]) for e in evs["C_sgd"]]
    assert (39, "phase_transition") in got and (59, "phase_transition") in got
    assert [t for _, t in got if t.startswith("regime")] == ["regime -> intermediate", "regime -> quantum"]
    base = [(e["step"], e["type"]) for e in evs["baseline"]]
    assert (49, "loss falls 10% (vs max of last 5 rows)") in base
    assert not any("C_sgd rises" in t for _, t in base)  # C_sgd only falls here
    # a monitor event the replay does not give is reported as a mismatch (negative control)
    mon.events.append({"step": 29, "event": "phase_transition", "C_after": 1.0})
    assert bench.events_by_source(mon)[1]["replay_matches"] is False


@pytest.mark.slow
def test_quick_run_headless(tmp_path):
    out = tmp_path / "ev"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--quiet", "--markdown", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**__import__("os").environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| optimizer | attention | monitor (log_every/tier1_every) | source | event |" in proc.stdout
    data = json.loads((out / "events.json").read_text())
    runs = data["runs"]
    assert {(r["optimizer"], r["attn"], r["setting"]) for r in runs} == {
        (o, a, s) for o in ("sgd", "adamw") for a in ("sdpa", "mha") for s in ("default", "fine")}
    for r in runs:
        assert r["drop"]["t10"] < r["drop"]["t50"] <= r["drop"]["t90"], r["drop"]  # the quick task drops
        assert r["losses_equal_across_settings"] is True  # the monitor does not change training
        assert r["checks"]["replay_matches"] is True  # the replay over C reproduces the monitor's own events
        assert len(r["losses"]) == 150 and r["rows"]
        assert (r["log_every"], r["tier1_every"]) == ((5, 5) if r["setting"] == "fine" else MONITOR_DEFAULTS)
    assert {ln["event"] for ln in data["table"]} >= {"phase_transition"}
    assert (out / "events.md").read_text().count("| optimizer |") == 2
    assert (out / "monitor_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_argument_is_one_line():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--attn", "lstm"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--attn 'lstm'" in lines[0] and "sdpa, mha" in lines[0]
