"""width: D = lr tr Sigma / (2 B d) at initialisation and after training."""
from __future__ import annotations

import math

import pytest


def test_width_smallest(run_smallest):
    cfg, results, rep = run_smallest("width", through_json=True)
    for c, r in results:
        for ph in ("init", "trained"):
            assert r[ph]["D"] > 0 and math.isfinite(r[ph]["D"])
            # D = lr tr Sigma / (2 B d)
            assert r[ph]["D"] == pytest.approx(cfg.lr * r[ph]["tr_sigma"] / (2 * cfg.batch_size * r["n_params"]),
                                               rel=1e-9)
    assert len(rep.rows) == 2
    assert all(math.isfinite(row.measured) for row in rep.rows)
