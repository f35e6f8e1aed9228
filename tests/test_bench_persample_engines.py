"""benchmarks/compare_persample_engines.py runs headless (--quick) and its figures say what they should.

No wall-time assertions. The exactness figures are checked against what is known of each engine: hhld's
PerSampleSqNorms and plain torch.func on a deterministic model agree with the float64 brute force; torch.func on
a model with dropout does not (its vmap draws other masks: the negative control that the error metric sees a
different per-sample graph); the refusals and crashes carry their error messages. The Opacus part is skipped
when opacus is not installed, and the run without it is checked too (opacus made unimportable).
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "compare_persample_engines.py"
HAVE_OPACUS = importlib.util.find_spec("opacus") is not None
QUICK = {"gpt_sdpa", "gpt_sdpa_nodrop", "lstm_bf_tag", "cnn_bn_train", "frozen_sparse"}


def _run(args, tmp_path, prelude=""):
    out = tmp_path / "engines.json"
    code = (f"import sys, runpy; {prelude}sys.argv = {[str(SCRIPT)] + args + ['--json', str(out)]!r}; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return _run(["--quick", "--quiet"], tmp_path_factory.mktemp("quick"))


def _by_case(data):
    return {r["case"]: r["engines"] for r in data["results"]}


@pytest.mark.timeout(900)
def test_quick_prints_both_tables_and_the_load(quick):
    text, data = quick
    assert "Coverage · exactness" in text and "Overhead:" in text
    assert "load average at start" in text and "load average at end" in text
    assert {r["case"] for r in data["results"]} == QUICK
    assert data["machine"]["torch"] and len(data["load_start"]) == 3
    for r in data["results"]:
        assert r["plain"]["cpu_ms"] > 0
        assert r["engines"]["hhld"]["timing"]["cpu_ratio"] > 0


@pytest.mark.timeout(900)
def test_quick_hhld_exact_and_coupling_reported(quick):
    eng = _by_case(quick[1])
    for case in QUICK:
        h = eng[case]["hhld"]
        assert h["status"] == "ok", (case, h)
        assert h["max_rel_err"] < 1e-4, (case, h["max_rel_err"])
        if case == "cnn_bn_train":  # conv 0 (upstream of the train-mode BatchNorm) is coupled, left out
            assert h["hhld_coupled"] == ["0.bias", "0.weight"]
            assert 0.5 < h["coverage"] < 1
        else:
            assert h["coverage"] == 1.0


@pytest.mark.timeout(900)
def test_quick_torch_func_exact_without_dropout_and_not_with_it(quick):
    eng = _by_case(quick[1])
    assert eng["gpt_sdpa_nodrop"]["func"]["status"] == "ok"
    assert eng["gpt_sdpa_nodrop"]["func"]["max_rel_err"] < 1e-4
    f = eng["gpt_sdpa"]["func"]  # vmap(randomness="different"): other dropout masks than the step's
    assert f["status"] == "ok" and f.get("masks_differ") and f["max_rel_err"] > 1e-3
    assert eng["cnn_bn_train"]["func"]["status"] == "crash"  # BatchNorm's in-place running-stat update
    assert "in-place" in eng["cnn_bn_train"]["func"]["error"]


@pytest.mark.timeout(900)
@pytest.mark.skipif(not HAVE_OPACUS, reason="opacus not installed (pip install 'hhld[compare]')")
def test_quick_opacus_outcomes_with_their_messages(quick):
    eng = _by_case(quick[1])
    assert eng["cnn_bn_train"]["opacus"]["status"] == "refused"
    assert "buffers" in eng["cnn_bn_train"]["opacus"]["error"]
    assert eng["cnn_bn_train"]["opacus+fix"]["status"] == "not comparable"  # BatchNorm -> GroupNorm
    assert "GroupNorm" in eng["cnn_bn_train"]["opacus+fix"]["error"]
    # the learned positions pos(arange(T)) have no batch axis: Opacus takes T = 8 rows for a batch of 6
    assert eng["gpt_sdpa"]["opacus"]["status"] == "crash" and "pos.weight" in eng["gpt_sdpa"]["opacus"]["error"]
    assert "tying" in eng["gpt_sdpa"]["ghost"]["error"]
    assert eng["gpt_sdpa"]["opacus+fix"]["status"] == "n/a"  # ModuleValidator.fix leaves the GPT as it is
    assert eng["lstm_bf_tag"]["opacus"]["status"] == "crash"  # nn.LSTM through the functorch fallback
    for e in ("opacus+fix", "ghost+fix"):  # DPLSTM
        assert eng["lstm_bf_tag"][e]["status"] == "ok" and eng["lstm_bf_tag"][e]["max_rel_err"] < 1e-4
    for e in ("opacus", "ghost"):
        assert eng["frozen_sparse"][e]["status"] == "ok" and eng["frozen_sparse"][e]["max_rel_err"] < 1e-4


@pytest.mark.timeout(600)
def test_without_opacus_the_opacus_columns_say_so(tmp_path):
    text, data = _run(["--only", "frozen_sparse", "--rounds", "0", "--quiet"], tmp_path,
                      prelude="sys.modules['opacus'] = None; ")
    assert data["machine"]["opacus"] is None
    eng = _by_case(data)["frozen_sparse"]
    for e in ("opacus", "opacus+fix", "ghost", "ghost+fix"):
        assert eng[e]["status"] == "not installed"
    assert eng["hhld"]["status"] == "ok" and eng["hhld"]["max_rel_err"] < 1e-4
    assert "not installed" in text


def test_bad_arguments_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--only", "nope", "--json", str(tmp_path / "x.json")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2 and "unknown workload" in proc.stderr
