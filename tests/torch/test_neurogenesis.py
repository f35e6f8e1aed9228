import copy

import pytest
import torch
from torch import nn

from hhld.torch.neurogenesis import (
    GrandCanonicalScheduler,
    LinearPair,
    add_neurons,
    candidate_scores,
    find_linear_pairs,
    neurodegeneration,
    neurogenesis,
    remove_neurons,
    removal_scores,
    sample_candidates,
)
from hhld.torch.optim import HeisenbergSGD

DT = torch.float64


def _mlp(seed=0, hidden=6):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 3)).to(DT)


class Block(nn.Module):
    """A transformer-style pre-LN MLP block (residual)."""

    def __init__(self, d=5, h=7):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, h)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(h, d)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(self.ln(x))))


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.block(x).mean(1))


def _data(n=24, d=4, seed=1, seq=None):
    g = torch.Generator().manual_seed(seed)
    shape = (n, d) if seq is None else (n, seq, d)
    return torch.randn(*shape, generator=g, dtype=DT), torch.randint(0, 3, (n,), generator=g)


LOSS = nn.CrossEntropyLoss()


def test_find_pairs():
    m = _mlp()
    pairs = find_linear_pairs(m)
    assert len(pairs) == 1 and pairs[0].fc_in is m[0] and pairs[0].fc_out is m[2]
    t = TinyTransformer()
    (p,) = find_linear_pairs(t)
    assert p.fc_in is t.block.fc1 and p.name == "block.fc1->fc2"
    enc = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
    (p,) = find_linear_pairs(enc)
    assert p.fc_in is enc.linear1 and p.width == 16
    with pytest.raises(ValueError, match="out_features"):
        LinearPair(nn.Linear(2, 3), nn.Linear(4, 1))


@pytest.mark.parametrize("which", ["mlp", "transformer"])
def test_zero_outgoing_weight_neuron_leaves_function_unchanged(which):
    if which == "mlp":
        m = _mlp()
        x, _ = _data()
    else:
        torch.manual_seed(0)
        m = TinyTransformer().to(DT)
        x, _ = _data(d=5, seq=4)
    (pair,) = find_linear_pairs(m)
    before = m(x).detach().clone()
    w, b = sample_candidates(pair, 3, torch.Generator().manual_seed(0))
    new = add_neurons(pair, w, b)
    assert new == list(range(pair.width - 3, pair.width))
    after = m(x).detach()
    # Unchanged up to round-off: the wider matmul may sum in another order (BLAS blocking).
    torch.testing.assert_close(after, before, rtol=0, atol=1e-13)
    assert pair.fc_in.out_features == pair.fc_out.in_features == pair.width


def _brute_removal(model, x, y):
    (pair,) = find_linear_pairs(model)
    base = LOSS(model(x), y).item()
    out = []
    for j in range(pair.width):
        m2 = copy.deepcopy(model)
        (p2,) = find_linear_pairs(m2)
        remove_neurons(p2, [j])
        out.append(LOSS(m2(x), y).item() - base)
    return torch.tensor(out, dtype=DT)


def test_removal_picks_least_harmful_neuron_brute_force():
    m = _mlp(hidden=8)
    x, y = _data()
    brute = _brute_removal(m, x, y)
    (pair,) = find_linear_pairs(m)
    exact = removal_scores(m, pair, LOSS, x, y, method="exact")
    assert torch.allclose(exact, brute, atol=1e-12)
    taylor = removal_scores(m, pair, LOSS, x, y, method="taylor")
    assert torch.corrcoef(torch.stack([taylor, brute]))[0, 1] > 0.8  # first order: close, not exact
    mixed = removal_scores(m, pair, LOSS, x, y, method="taylor", exact_top_k=8)
    assert torch.allclose(mixed, brute, atol=1e-12)
    move = neurodegeneration(m, pair, LOSS, x, y)
    assert move.index == int(torch.argmin(brute)) and move.width_after == 7
    assert move.delta_loss == pytest.approx(float(brute.min()), abs=1e-12)
    assert not move.estimated


def test_candidate_score_is_gradient_of_outgoing_weights():
    m = _mlp()
    x, y = _data()
    (pair,) = find_linear_pairs(m)
    w, b = sample_candidates(pair, 5, torch.Generator().manual_seed(3))
    scores = candidate_scores(m, pair, LOSS, x, y, w, b)
    assert pair.width == 6  # the model is not modified by scoring
    for k in range(5):
        m2 = copy.deepcopy(m)
        (p2,) = find_linear_pairs(m2)
        (j,) = add_neurons(p2, w[k], b[k])
        LOSS(m2(x), y).backward()
        ref = p2.fc_out.weight.grad[:, j].pow(2).sum()
        assert scores[k].item() == pytest.approx(ref.item(), rel=1e-10)
    move = neurogenesis(m, pair, LOSS, x, y, n_candidates=5, generator=torch.Generator().manual_seed(3),
                        step_size=0.1)
    assert move.score == pytest.approx(scores.max().item(), rel=1e-12)
    assert move.delta_loss == pytest.approx(-0.1 * scores.max().item())
    assert pair.width == 7


def test_adding_best_candidate_then_a_step_decreases_loss():
    m = _mlp()
    x, y = _data()
    (pair,) = find_linear_pairs(m)
    base = LOSS(m(x), y).item()
    move = neurogenesis(m, pair, LOSS, x, y, n_candidates=8, generator=torch.Generator().manual_seed(0),
                        step_size=1e-3)
    LOSS(m(x), y).backward()
    with torch.no_grad():
        g = pair.fc_out.weight.grad[:, move.index].clone()
        pair.fc_out.weight[:, move.index] -= 1e-3 * g
    new = LOSS(m(x), y).item()
    assert new - base == pytest.approx(move.delta_loss, rel=0.05)


@pytest.mark.parametrize("opt_name", ["sgd", "adam", "heisenberg"])
def test_optimizer_state_follows_add_and_remove(opt_name):
    m = _mlp()
    x, y = _data()
    make = {
        "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
        "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
        "heisenberg": lambda ps: HeisenbergSGD(ps, lr=0.05, momentum=0.9, D_inject=1e-5, seed=0),
    }[opt_name]
    opt = make(m.parameters())
    for _ in range(3):
        opt.zero_grad()
        LOSS(m(x), y).backward()
        opt.step()
    (pair,) = find_linear_pairs(m)
    old_w_in = pair.fc_in.weight
    old_state = {k: v.clone() for k, v in opt.state[old_w_in].items() if torch.is_tensor(v)}
    remove_neurons(pair, [2], opt)
    assert old_w_in not in opt.state
    params = [p for g in opt.param_groups for p in g["params"]]
    assert {id(p) for p in params} == {id(p) for p in m.parameters()}
    for p in m.parameters():
        for k, v in opt.state[p].items():
            if torch.is_tensor(v) and v.ndim > 0:
                assert v.shape == p.shape, (k, v.shape, p.shape)
    keep = [0, 1, 3, 4, 5]
    for k, v in old_state.items():
        if v.ndim > 0:
            assert torch.equal(opt.state[pair.fc_in.weight][k], v[keep])
    w, b = sample_candidates(pair, 2, torch.Generator().manual_seed(0))
    add_neurons(pair, w, b, optimizers=[opt])
    assert pair.width == 7
    for p in m.parameters():
        for k, v in opt.state[p].items():
            if torch.is_tensor(v) and v.ndim > 0:
                assert v.shape == p.shape
    key = next(k for k, v in old_state.items() if v.ndim > 0)
    assert torch.count_nonzero(opt.state[pair.fc_out.weight][key][:, 5:]) == 0
    l0 = LOSS(m(x), y).item()
    for _ in range(20):  # training continues, and the new units learn
        opt.zero_grad()
        LOSS(m(x), y).backward()
        opt.step()
    assert LOSS(m(x), y).item() < l0
    assert pair.fc_out.weight[:, 5:].abs().sum() > 0


def test_errors():
    m = _mlp(hidden=2)
    (pair,) = find_linear_pairs(m)
    with pytest.raises(ValueError, match="all"):
        remove_neurons(pair, [0, 1])
    with pytest.raises(IndexError, match=r"\[5\] out of range for width 2"):
        remove_neurons(pair, [5])
    m3 = _mlp(hidden=4)
    (pair3,) = find_linear_pairs(m3)
    # a repeated index is refused (not silently removed once), a float is refused (not truncated to 1)
    with pytest.raises(ValueError, match=r"\[1\] given more than once"):
        remove_neurons(pair3, [1, 1])
    with pytest.raises(TypeError, match="integers, got 1.7"):
        remove_neurons(pair3, [1.7])
    with pytest.raises(TypeError, match="dtype torch.float32"):
        remove_neurons(pair3, torch.tensor([1.0]))
    assert pair3.width == 4  # nothing was removed by a refused call
    remove_neurons(pair3, torch.tensor([3, 0]))  # integer tensors are fine
    assert pair3.width == 2
    with pytest.raises(ValueError, match="method"):
        removal_scores(m, pair, LOSS, *_data(), method="magic")
    with pytest.raises(ValueError, match="pair"):
        GrandCanonicalScheduler(nn.Linear(3, 3), LOSS)


def _scheduler_run(mu, stiffness, steps=120, target=None, seed=0, temperature=2e-3):
    m = _mlp(hidden=6)
    x, y = _data(n=48)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    sch = GrandCanonicalScheduler(m, LOSS, opt, chemical_potential=mu, temperature=temperature, stiffness=stiffness, target=target,
                                  interval=2, n_candidates=4, max_width=20, seed=seed, window=50)
    for _ in range(steps):
        opt.zero_grad()
        LOSS(m(x), y).backward()
        opt.step()
        sch.step(x, y)
    return sch, m


def test_grand_canonical_scheduler_logs_and_mu_knob():
    sch, m = _scheduler_run(mu=0.0, stiffness=0.002, target=6)
    assert len(sch.n_trace) == 120 and len(sch.history) == 60
    assert all(k in sch.history[0] for k in ("N", "delta_N", "chemical_potential_estimate", "accepted", "delta_omega"))
    assert any(h["accepted"] for h in sch.history)
    assert sch.delta_N > 0                  # N(t) fluctuates
    assert abs(sum(sch.n_trace) / len(sch.n_trace) - 6) < 3  # around the target
    assert sch.chemical_potential_estimate is not None
    assert m[0].out_features == sch.N
    # a large chemical potential grows the layer, a very negative one shrinks it
    up, _ = _scheduler_run(mu=1.0, stiffness=0.0)
    down, _ = _scheduler_run(mu=-1.0, stiffness=0.0)
    assert up.N > 12 and down.N <= 2
