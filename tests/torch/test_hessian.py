"""Hutchinson trace and top eigenvalue against the exact float64 Hessian."""
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from hhld.torch import hutchinson_trace, make_hvp, top_eigenvalue


def exact_hessian(model, loss_fn, x, y):
    names = [n for n, p in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(flat):
        ps, i = {}, 0
        for n, s in zip(names, shapes):
            k = int(torch.tensor(s).prod()) if len(s) else 1
            ps[n] = flat[i:i + k].reshape(s)
            i += k
        return loss_fn(functional_call(model, ps, (x,)), y)

    return hessian(f)(flat0)


@pytest.fixture
def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randint(0, 2, (20,))
    return model, nn.CrossEntropyLoss(), x, y


def test_hvp_matches_exact(problem):
    model, lf, x, y = problem
    H = exact_hessian(model, lf, x, y)
    hvp, params = make_hvp(model, lf, x, y)
    v = [torch.randn_like(p) for p in params]
    hv = torch.cat([h.reshape(-1) for h in hvp(v)])
    assert torch.allclose(hv, H @ torch.cat([t.reshape(-1) for t in v]), atol=1e-10)


def test_hutchinson_within_4_stderr(problem):
    model, lf, x, y = problem
    tr_exact = float(torch.trace(exact_hessian(model, lf, x, y)))
    g = torch.Generator().manual_seed(1)
    tr, se = hutchinson_trace(model, lf, x, y, n_probes=200, generator=g)
    assert se > 0
    assert abs(tr - tr_exact) < 4 * se
    # reproducible with the same generator seed
    tr2, _ = hutchinson_trace(model, lf, x, y, n_probes=200, generator=torch.Generator().manual_seed(1))
    assert tr2 == tr


def test_top_eigenvalue_and_warm_start(problem):
    model, lf, x, y = problem
    ev = torch.linalg.eigvalsh(exact_hessian(model, lf, x, y))
    lam_ref = float(ev[ev.abs().argmax()])
    est = top_eigenvalue(model, lf, x, y, n_iter=500, tol=1e-10, generator=torch.Generator().manual_seed(0))
    assert est.eigenvalue == pytest.approx(lam_ref, rel=1e-4)
    warm = top_eigenvalue(model, lf, x, y, n_iter=500, tol=1e-8, init=est.eigenvector)
    assert warm.n_iter <= 3 and warm.converged
    assert warm.eigenvalue == pytest.approx(lam_ref, rel=1e-4)


def test_bad_probes(problem):
    model, lf, x, y = problem
    with pytest.raises(ValueError, match="n_probes"):
        hutchinson_trace(model, lf, x, y, n_probes=0)
