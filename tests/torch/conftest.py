"""Make the float64 reference helpers of this folder importable by the other test files."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))



import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _no_live_engine_mode_left():
    """No test leaves a per-sample engine watching (a live function mode on the stack); inert modes (their
    backward pass ran, the engine was not reset) are taken off so that tests stay independent."""
    yield
    from hhld.torch.persample.engine import _Mode, _pop_inert_modes

    stack = torch.overrides._get_current_function_mode_stack()
    live = [m for m in stack if isinstance(m, _Mode) and m.live]
    for m in live:
        m.live = False
    _pop_inert_modes()
    assert not live, "a per-sample engine's function mode was left on (live) after the test"
