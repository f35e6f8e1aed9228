"""Every cell of the ensemble experiments is a pure function of (config, cell): the same inputs give the same
result (what the runner's cache and --resume rely on)."""
import pytest

from hhld.validate.base import REGISTRY


@pytest.mark.parametrize("name, shorter", [("dimension", {"t_max": 5.0}), ("tunneling_rate", {"t_max": 5.0}),
                                           ("uncertainty", {})])
def test_cells_are_pure_functions_of_config_and_cell(name, shorter):
    e = REGISTRY[name]
    cfg = e.config("smallest")
    c = e.cells(cfg, cfg.seeds)[0]
    cfg = cfg.replace(**shorter) if shorter else cfg
    assert e.run_cell(cfg, c) == e.run_cell(cfg, c)
