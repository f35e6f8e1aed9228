"""Shared by the experiment tests: run an experiment at its smallest configuration, find a row."""
from __future__ import annotations

import json

import pytest

from hhld.validate.base import REGISTRY, VERDICTS
from hhld.validate.experiments import load_all

load_all()


def _run(name, cfg=None, *, through_json=False):
    """``(config, [(cell, result)], report)`` of every cell at ``cfg`` (default: smallest);
    ``through_json``: results go through JSON like the runner's cache."""
    e = REGISTRY[name]
    cfg = cfg or e.config("smallest")
    results = []
    for c in e.cells(cfg, cfg.seeds):
        r = e.run_cell(cfg, c)
        results.append((c, json.loads(json.dumps(r)) if through_json else r))
    rep = e.summarize(cfg, results)
    assert rep.rows and all(r.verdict in VERDICTS for r in rep.rows)
    assert rep.figures
    if through_json:
        json.dumps(rep.data)
    return cfg, results, rep


def _row(rep, start):
    rows = [r for r in rep.rows if r.prediction.startswith(start)]
    assert rows, [r.prediction for r in rep.rows]
    return rows[0]


@pytest.fixture
def run_smallest():
    return _run


@pytest.fixture
def find_row():
    return _row
