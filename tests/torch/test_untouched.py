"""untouched(model): forward passes beside training leave its buffers and the global random stream as they were."""
import torch
import torch.nn.functional as F
from torch import nn

from hhld.torch.hessian import hutchinson_trace, make_hvp
from hhld.torch.noise import gradient_noise_stats
from hhld.torch.untouched import untouched


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)


def _leaves_no_trace(model, fn):
    before = [b.clone() for b in model.buffers()]
    objects = [id(b) for b in model.buffers()]
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    fn()
    return (all(torch.equal(a, b) for a, b in zip(before, model.buffers())) and
            [id(b) for b in model.buffers()] == objects and torch.equal(torch.rand(3), expected))


def test_a_train_mode_forward_inside_leaves_no_trace_and_one_outside_does():
    model, (x, y) = _model(), _data()
    with torch.no_grad():
        assert not _leaves_no_trace(model, lambda: model(x))  # the negative control: BatchNorm and dropout move
    model = _model()

    def inside():
        with untouched(model), torch.no_grad():
            model(x)

    assert _leaves_no_trace(model, inside)


def test_a_graph_built_inside_stays_usable_after():
    # make_hvp's forward runs inside untouched(); its Hessian-vector products run after: the restored buffers must not
    # invalidate the graph (train-mode BatchNorm saves its running statistics)
    model, (x, y) = _model(), _data()
    hvp, params = make_hvp(model, F.cross_entropy, x, y)
    hv = hvp([torch.ones_like(p) for p in params])
    assert all(torch.isfinite(h).all() for h in hv)


def test_the_analysis_functions_leave_no_trace():
    model, (x, y) = _model(), _data()
    assert _leaves_no_trace(model, lambda: gradient_noise_stats(model, F.cross_entropy, x, y))
    assert _leaves_no_trace(model, lambda: hutchinson_trace(model, F.cross_entropy, x, y, 4,
                                                            torch.Generator().manual_seed(0)))
