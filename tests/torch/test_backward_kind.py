"""hhld.torch.backward_kind: what kind of backward pass a hook runs in."""
import pytest
import torch
from torch import nn

from hhld.torch.backward_kind import AccumulationProbe, builds_graph


def _answers(run):
    lin, other = nn.Linear(3, 2), nn.Linear(3, 2)
    probe, probe_other = AccumulationProbe(lin.parameters()), AccumulationProbe(other.parameters())
    x = torch.randn(4, 3, requires_grad=True)
    out = lin(x).tanh()
    seen = []
    out.register_hook(lambda g: seen.append((probe(), probe(), probe_other(), builds_graph())))
    run(out, x, lin)
    assert len(seen) == 1
    first, cached, other_params, graph = seen[0]
    assert first == cached
    return first, other_params, graph


@pytest.mark.parametrize("name, run, expected", [
    ("backward", lambda o, x, m: o.sum().backward(), (True, False, False)),
    ("backward, create_graph", lambda o, x, m: o.sum().backward(create_graph=True), (True, False, True)),
    ("backward(inputs=bias)", lambda o, x, m: o.sum().backward(inputs=[m.bias]), (True, False, False)),
    ("backward(inputs=x)", lambda o, x, m: o.sum().backward(inputs=[x]), (False, False, False)),
    ("autograd.grad wrt the input", lambda o, x, m: torch.autograd.grad(o.sum(), x), (False, False, False)),
    ("autograd.grad wrt the parameters", lambda o, x, m: torch.autograd.grad(o.sum(), list(m.parameters())),
     (False, False, False)),
    ("autograd.grad, create_graph", lambda o, x, m: torch.autograd.grad(o.sum(), x, create_graph=True),
     (False, False, True)),
])
def test_probe_and_create_graph_inside_a_hook(name, run, expected):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # backward(create_graph=True)'s reference-cycle warning
        assert _answers(run) == expected, name


def test_outside_a_backward_pass_the_probe_says_yes():
    assert AccumulationProbe([nn.Parameter(torch.ones(2))])() is True
    assert AccumulationProbe([])() is True
