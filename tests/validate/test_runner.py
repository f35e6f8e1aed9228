"""hhld.validate.runner: cache, resume, kill-and-resume equality, ray == local, report files, threads, bad cached cells."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from hhld.validate.base import (Cell, Experiment, ExperimentConfig, ExperimentReport, Row, claim,
                                register, verdict_within)
from hhld.validate.runner import InjectedFault, run_validation


@dataclass(frozen=True)
class ToyConfig(ExperimentConfig):
    n: int = 2000
    D_values: tuple[float, ...] = (0.1, 0.2, 0.4)
    seeds: tuple[int, ...] = (0, 1)


CALLS: list = []


@register
class Toy(Experiment):
    """Variance of an OU-like Gaussian sample: cheap, random, seeded."""

    name = "_toy"
    title = "toy"
    config_cls = ToyConfig

    def cells(self, config, seeds):
        return [Cell(self.name, {"D": D}, s) for D in config.D_values for s in seeds]

    def run_cell(self, config, cell):
        CALLS.append((cell.key["D"], cell.seed))
        x = np.random.default_rng(cell.seed).normal(0, math.sqrt(cell.key["D"]), config.n)
        return {"var": float(x.var()), "arr": x[:3]}

    def summarize(self, config, results):
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure

        dev = max(abs(r["var"] - c.key["D"]) / c.key["D"] for c, r in results)
        fig = Figure()
        fig.subplots().plot([c.key["D"] for c, _ in results], [r["var"] for _, r in results], "o")
        return ExperimentReport(rows=[Row("var = D", claim("theorem2"), dev, 0.01, f"{dev:.3f}",
                                          verdict_within(dev, 0.0 + 1e-300, 1e300), "toy")],
                                figures={"var": fig}, notes="toy notes")


def _numbers(path):
    r = json.loads((path / "results.json").read_text())
    e = r["experiments"]["_toy"]
    return [c["result"] for c in e["cells"]], e["rows"]


def test_cache_and_resume(tmp_path):
    CALLS.clear()
    run_validation(tmp_path, only=["_toy"], quiet=True)
    assert len(CALLS) == 6
    run_validation(tmp_path, only=["_toy"], quiet=True, resume=True)
    assert len(CALLS) == 6  # nothing recomputed
    run_validation(tmp_path, only=["_toy"], quiet=True)
    assert len(CALLS) == 12  # without --resume everything is recomputed
    # a changed config is a different cache key
    run_validation(tmp_path, only=["_toy"], quiet=True, resume=True, configs={"_toy": ToyConfig(n=1000)})
    assert len(CALLS) == 18


def test_more_seeds_reuse_the_finished_cells(tmp_path):
    # seeds are a plan field: extending 2 seeds to 3 computes only the third seed's cells
    CALLS.clear()
    run_validation(tmp_path, only=["_toy"], quiet=True)
    ref = _numbers(tmp_path)[0]
    CALLS.clear()
    vr = run_validation(tmp_path, only=["_toy"], quiet=True, resume=True, n_seeds=3)
    assert sorted(CALLS) == [(0.1, 2), (0.2, 2), (0.4, 2)]
    assert sum(vr.experiments[0].cached) == 6
    new = _numbers(tmp_path)[0]
    assert [r for r, c in zip(new, vr.experiments[0].cells) if c.seed < 2] == ref
    # a field a cell reads is not a plan field
    assert ToyConfig().cell_dict() == {"n": 2000, "D_values": [0.1, 0.2, 0.4]}
    cell = Cell("_toy", {"D": 0.1}, 0)
    assert cell.cache_key(ToyConfig(seeds=(0,)), "v") == cell.cache_key(ToyConfig(seeds=(0, 5)), "v")
    assert cell.cache_key(ToyConfig(n=10), "v") != cell.cache_key(ToyConfig(), "v")


def test_kill_and_resume_gives_same_results(tmp_path):
    ref = tmp_path / "ref"
    run_validation(ref, only=["_toy"], quiet=True)
    killed = tmp_path / "killed"
    with pytest.raises(InjectedFault):
        run_validation(killed, only=["_toy"], quiet=True, fault_after=4)
    assert len(list((killed / "cells" / "_toy").glob("*.json"))) == 4
    CALLS.clear()
    run_validation(killed, only=["_toy"], quiet=True, resume=True)
    assert len(CALLS) == 2  # only the unfinished cells
    assert _numbers(ref) == _numbers(killed)


def test_report_files(tmp_path):
    run_validation(tmp_path, only=["_toy"], quiet=True)
    html = (tmp_path / "report.html").read_text()
    assert "<table id='summary'>" in html and "Documents&#x27; value" in html
    assert html.count("data:image/png;base64,") == 1
    assert "var = D" in html
    md = (tmp_path / "report.md").read_text()
    assert "| Prediction | Documents' value | Measured (± uncertainty) | Error | Verdict |" in md
    assert (tmp_path / "figures" / "_toy_var.png").stat().st_size > 1000
    r = json.loads((tmp_path / "results.json").read_text())
    assert set(r["versions"]) >= {"hhld", "torch", "numpy", "python"}
    e = r["experiments"]["_toy"]
    assert e["seeds"] == [0, 1] and all(c["timing_s"] >= 0 for c in e["cells"])
    assert e["rows"][0]["uncertainty"] == 0.01


def test_seeds_override_and_bad_input(tmp_path):
    vr = run_validation(tmp_path, only=["_toy"], quiet=True, n_seeds=3, write_report=False)
    assert [c.seed for c in vr.experiments[0].cells] == [0, 1, 2] * 3
    with pytest.raises(ValueError, match="unknown experiment"):
        run_validation(tmp_path, only=["nope"], quiet=True)
    with pytest.raises(ValueError, match="executor"):
        run_validation(tmp_path, only=["_toy"], executor="dask")
    with pytest.raises(ValueError, match="verdict"):
        Row("p", "d", 1.0, None, "", "maybe")


def test_broken_cell_is_reported_not_cached(tmp_path, monkeypatch):
    orig = Toy.run_cell

    def broken(self, config, cell):
        if cell.seed == 1:
            raise RuntimeError("boom")
        return orig(self, config, cell)

    monkeypatch.setattr(Toy, "run_cell", broken)
    vr = run_validation(tmp_path, only=["_toy"], quiet=True)
    r = vr.experiments[0]
    assert sum(e is not None for e in r.errors) == 3 and r.report is not None
    assert len(list((tmp_path / "cells" / "_toy").glob("*.json"))) == 3
    # the report says that the summary stands on 3 of 6 cells, and why
    md = (tmp_path / "report.md").read_text()
    assert "3 of 6 cells failed" in md and "RuntimeError: boom" in md


def test_ray_start_failure_is_one_clear_error(monkeypatch):
    ray = pytest.importorskip("ray")
    from hhld.validate.runner import ExecutorError, _ray_init

    def timeout(**kw):
        raise TimeoutError("The current node timed out during startup.")

    monkeypatch.setattr(ray, "init", timeout)
    with pytest.raises(ExecutorError, match=r"could not start a local Ray .*timed out.*--address auto"):
        _ray_init(ray, None, None)
    with pytest.raises(ExecutorError, match=r"--address 10.0.0.1:6379.*ray status"):
        _ray_init(ray, "10.0.0.1:6379", None)


@pytest.mark.slow
def test_ray_equals_local(tmp_path):
    pytest.importorskip("ray")
    run_validation(tmp_path / "local", only=["_toy"], quiet=True)
    run_validation(tmp_path / "ray", only=["_toy"], quiet=True, executor="ray", ray_num_cpus=2)
    assert _numbers(tmp_path / "local") == _numbers(tmp_path / "ray")


def test_cli_list_and_run(tmp_path):
    from typer.testing import CliRunner

    from hhld.cli import app

    res = CliRunner().invoke(app, ["validate", "--list"])
    assert res.exit_code == 0 and "tunneling_rate" in res.output
    res = CliRunner().invoke(app, ["validate", "--only", "_toy", "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "report.html").exists()


def test_cells_run_on_the_requested_torch_threads_and_restore(tmp_path, monkeypatch):
    import torch

    from hhld.validate.runner import torch_threads

    seen = []
    orig = Toy.run_cell
    monkeypatch.setattr(Toy, "run_cell", lambda self, c, cell: (seen.append(torch.get_num_threads()),
                                                                orig(self, c, cell))[1])
    before = torch.get_num_threads()
    run_validation(tmp_path / "a", only=["_toy"], configs={"_toy": ToyConfig(n=50)}, quiet=True, threads=1)
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before
    assert json.loads((tmp_path / "a" / "results.json").read_text())["torch_threads_per_cell"] == 1
    seen.clear()
    run_validation(tmp_path / "b", only=["_toy"], configs={"_toy": ToyConfig(n=50)}, quiet=True, threads=0)
    assert set(seen) == {before}
    with pytest.raises(ValueError, match="threads must be >= 0"):
        with torch_threads(-1):
            pass


@pytest.mark.parametrize("content, why", [
    ('{"cell": CELL, "result": null, "timing_s": 0.1}', "not a dict"),
    ("[]", "holds a list"),
    ('{"cell": CELL, "timing_s": 0.1}', "no 'result'"),
    ('{"cell": CELL, "result": {}, "timing_s": 0.1}', "empty dict"),
    ('{"cell": CELL, "result": {"var": 1.0}, "timing_s": "x"}', "timing_s"),
    ("{not json", "unreadable"),
])
def test_bad_cached_cell_is_recomputed_with_a_warning(tmp_path, content, why):
    from hhld.validate.base import CacheWarning
    from hhld.validate.runner import _cache_path, plan

    CALLS.clear()
    run_validation(tmp_path, only=["_toy"], quiet=True)
    ref = _numbers(tmp_path)
    r = plan(["_toy"])[0]
    cell = r.cells[4]
    path = _cache_path(tmp_path, cell, r.config)
    path.write_text(content.replace("CELL", json.dumps(cell.to_dict())))
    CALLS.clear()
    with pytest.warns(CacheWarning, match=why):
        vr = run_validation(tmp_path, only=["_toy"], quiet=True, resume=True)
    assert CALLS == [(cell.key["D"], cell.seed)]  # only the bad cell, recomputed
    assert _numbers(tmp_path) == ref and not any(vr.experiments[0].errors)
    assert json.loads(path.read_text())["result"]["var"] == ref[0][4]["var"]  # the file is repaired
