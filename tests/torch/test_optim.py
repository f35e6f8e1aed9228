import copy
import math
import warnings

import pytest
import torch
from torch import nn

from hhld import NonFiniteError
from hhld.torch.optim import ControllerConfig, HeisenbergSGD, heisenberg_sgd


def _mlp(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def _data(seed=1, n=32, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def _train(model, opt, steps, x, y, **step_kw):
    loss_fn = nn.CrossEntropyLoss()
    for i in range(steps):
        opt.zero_grad()
        xb, yb = x[(i * 8) % 32:(i * 8) % 32 + 8], y[(i * 8) % 32:(i * 8) % 32 + 8]
        loss_fn(model(xb), yb).backward()
        opt.step(**step_kw)


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("kw, msg", [
    (dict(lr=0.0), "lr"), (dict(lr=-1.0), "lr"), (dict(lr=float("nan")), "lr"),
    (dict(D_inject=-0.1), "D_inject"), (dict(momentum=-0.5), "momentum"),
    (dict(weight_decay=-1.0), "weight_decay"), (dict(kick_factor=-3.0), "kick_factor"),
    (dict(kick_threshold=-0.5), "kick_threshold"), (dict(eta=0.0), "eta"), (dict(D=0.0), "D"),
    (dict(nesterov=True), "nesterov"), (dict(kick_cooldown=-1), "kick_cooldown"),
])
def test_validation_errors_name_the_value(kw, msg):
    model = _mlp()
    with pytest.raises(ValueError, match=msg):
        HeisenbergSGD(model.parameters(), **{"lr": 0.1, **kw})


def test_validation_types_and_groups():
    model = _mlp()
    with pytest.raises(TypeError, match="controller"):
        HeisenbergSGD(model.parameters(), lr=0.1, controller="yes")
    with pytest.raises(TypeError, match="generator"):
        HeisenbergSGD(model.parameters(), lr=0.1, generator=3)
    with pytest.raises(ValueError, match="lr"):  # a bad value inside a param group
        HeisenbergSGD([{"params": model[0].parameters(), "lr": -1}], lr=0.1)
    with pytest.raises(ValueError, match="lr_factor"):
        ControllerConfig(lr_factor=0.5)
    with pytest.raises(ValueError, match="kick_threshold"):
        ControllerConfig(kick_threshold=20.0, explore_threshold=10.0)


# ------------------------------------------------------------------ equals SGD
@pytest.mark.parametrize("kw", [
    dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-3),
    dict(momentum=0.5, dampening=0.1, weight_decay=1e-2, maximize=True),
])
@pytest.mark.parametrize("foreach", [False, True])
def test_no_noise_no_kicks_equals_torch_sgd(kw, foreach):
    x, y = _data()
    m1, m2 = _mlp(), _mlp()
    o1 = torch.optim.SGD(m1.parameters(), lr=0.05, foreach=foreach, **kw)
    o2 = HeisenbergSGD(m2.parameters(), lr=0.05, foreach=foreach, seed=0, **kw)
    _train(m1, o1, 12, x, y)
    _train(m2, o2, 12, x, y)
    assert torch.equal(_flat(m1), _flat(m2))
    assert o2.events == []
    if kw.get("momentum"):
        for p1, p2 in zip(m1.parameters(), m2.parameters()):
            assert torch.equal(o1.state[p1]["momentum_buffer"], o2.state[p2]["momentum_buffer"])


def test_param_groups_have_their_own_hparams():
    x, y = _data()
    m1, m2 = _mlp(), _mlp()
    o1 = torch.optim.SGD([{"params": m1[0].parameters(), "lr": 0.2}, {"params": m1[2].parameters()}], lr=0.05)
    o2 = HeisenbergSGD([{"params": m2[0].parameters(), "lr": 0.2}, {"params": m2[2].parameters()}], lr=0.05)
    _train(m1, o1, 5, x, y)
    _train(m2, o2, 5, x, y)
    assert torch.equal(_flat(m1), _flat(m2))
    assert o2.param_groups[0]["lr"] == 0.2 and o2.param_groups[1]["D_inject"] == 0.0


# ------------------------------------------------------------------ noise
def test_noise_variance_is_2_D_lr():
    d, D, lr, steps = 4000, 0.3, 0.02, 5
    p = nn.Parameter(torch.zeros(d, dtype=torch.float64))
    opt = HeisenbergSGD([p], lr=lr, D_inject=D, kick_threshold=None, seed=123)
    incs = []
    for _ in range(steps):
        before = p.detach().clone()
        p.grad = torch.zeros_like(p)
        opt.step()
        incs.append(p.detach() - before)
    inc = torch.cat(incs)
    n = inc.numel()
    var = inc.pow(2).mean().item()            # mean is 0: no drift
    target = 2 * D * lr
    se = target * math.sqrt(2.0 / n)          # std of a chi^2 sample variance
    assert abs(var - target) < 4 * se, (var, target, se)
    assert abs(var - D * lr) > 4 * se  # negative control: the variance without the 2 (D lr) fails
    assert abs(inc.mean().item()) < 4 * math.sqrt(target / n)


def test_noise_with_drift_and_reproducible_by_seed():
    x, y = _data()
    ms = [_mlp(), _mlp(), _mlp()]
    os_ = [HeisenbergSGD(ms[0].parameters(), lr=0.05, D_inject=1e-3, seed=7),
           HeisenbergSGD(ms[1].parameters(), lr=0.05, D_inject=1e-3, seed=7),
           HeisenbergSGD(ms[2].parameters(), lr=0.05, D_inject=1e-3, seed=8)]
    for m, o in zip(ms, os_):
        _train(m, o, 5, x, y)
    assert torch.equal(_flat(ms[0]), _flat(ms[1]))
    assert not torch.equal(_flat(ms[0]), _flat(ms[2]))


# ------------------------------------------------------------------ kernel: foreach == loop
@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_kernel_foreach_equals_loop(momentum, nesterov):
    g = torch.Generator().manual_seed(0)
    shapes = [(7, 3), (3,), (2, 2, 2)]
    dtypes = [torch.float64, torch.float64, torch.float32]  # mixed dtypes: grouped foreach
    ps = [torch.randn(s, generator=g, dtype=dt) for s, dt in zip(shapes, dtypes)]
    p_loop = [p.clone() for p in ps]
    p_fe = [p.clone() for p in ps]
    b_loop, b_fe = [None] * 3, [None] * 3
    for _ in range(4):
        grads = [torch.randn(s, generator=g, dtype=dt) for s, dt in zip(shapes, dtypes)]
        noise = [torch.randn(s, generator=g, dtype=dt) for s, dt in zip(shapes, dtypes)]
        kick = [0.1 * torch.randn(s, generator=g, dtype=dt) for s, dt in zip(shapes, dtypes)]
        kw = dict(lr=0.03, weight_decay=0.01, momentum=momentum, nesterov=nesterov, D_inject=0.2,
                  noise=noise, kick=kick)
        heisenberg_sgd(p_loop, grads, b_loop, foreach=False, **kw)
        heisenberg_sgd(p_fe, grads, b_fe, foreach=True, **kw)
    for a, b in zip(p_loop, p_fe):
        assert torch.equal(a, b)
    if momentum:
        for a, b in zip(b_loop, b_fe):
            assert torch.equal(a, b)


def test_optimizer_foreach_equals_loop_with_noise_and_kicks():
    x, y = _data()
    m1, m2 = _mlp(), _mlp()
    kw = dict(lr=0.05, momentum=0.9, D_inject=1e-3, D=1e-2, kick_threshold=1e9, kick_cooldown=3, seed=3)
    o1 = HeisenbergSGD(m1.parameters(), foreach=False, **kw)
    o2 = HeisenbergSGD(m2.parameters(), foreach=True, **kw)
    _train(m1, o1, 10, x, y)
    _train(m2, o2, 10, x, y)
    assert torch.equal(_flat(m1), _flat(m2))
    assert [e["step"] for e in o1.events] == [0, 3, 6, 9]


def test_kernel_errors():
    p = [torch.zeros(3)]
    with pytest.raises(ValueError, match="noise"):
        heisenberg_sgd(p, [torch.ones(3)], [None], lr=0.1, D_inject=0.1)
    with pytest.raises(ValueError, match="same length"):
        heisenberg_sgd(p, [], [None], lr=0.1)


# ------------------------------------------------------------------ kicks
def test_kick_amplitude_is_kick_factor_hbar():
    d, D, lr = 50, 0.01, 0.1
    p = nn.Parameter(torch.zeros(d, dtype=torch.float64))
    opt = HeisenbergSGD([p], lr=lr, D=D, kick_threshold=0.5, kick_factor=3.0, seed=0)
    p.grad = torch.zeros_like(p)  # C = 0 < 0.5: kick; no drift, no noise
    opt.step()
    hbar = math.sqrt((1 / lr) * D)  # eta = 1/lr
    assert p.detach().norm().item() == pytest.approx(3 * hbar, rel=1e-12)
    ev = opt.events[0]
    assert ev["action"] == "kick" and ev["C"] == 0.0 and ev["hbar"] == pytest.approx(hbar)
    # explicit eta
    p2 = nn.Parameter(torch.zeros(d, dtype=torch.float64))
    opt2 = HeisenbergSGD([p2], lr=lr, D=D, eta=2.0, kick_factor=1.0, seed=0)
    p2.grad = torch.zeros_like(p2)
    opt2.step()
    assert p2.detach().norm().item() == pytest.approx(math.sqrt(2.0 * D), rel=1e-12)


def test_consolidation_computed_and_passed_in():
    p = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = HeisenbergSGD([p], lr=0.1, D=0.5, kick_threshold=0.5, seed=0)
    p.grad = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)  # C = 4/(0.5*4) = 2
    opt.step()
    assert opt.last_consolidation[0] == pytest.approx(2.0)
    assert opt.events == []
    opt.step(consolidation=0.1)  # the monitor says: transition
    assert opt.events[-1]["action"] == "kick" and opt.events[-1]["C"] == 0.1
    # no D and no C: no kick, no C
    q = nn.Parameter(torch.zeros(4))
    opt3 = HeisenbergSGD([q], lr=0.1, seed=0)
    q.grad = torch.zeros(4)
    opt3.step()
    assert opt3.last_consolidation[0] is None and opt3.events == []
    opt3.step(diffusion=0.1)  # a monitor's D: C = 0 -> kick
    assert opt3.events[-1]["action"] == "kick"


def test_bad_groups_are_refused_before_they_are_added():
    model = _mlp()
    opt = HeisenbergSGD(model[0].parameters(), lr=0.1, seed=0)
    with pytest.raises(ValueError, match="lr must be > 0, got lr=-1"):
        opt.add_param_group({"params": model[2].parameters(), "lr": -1})
    assert len(opt.param_groups) == 1  # nothing was appended
    with pytest.raises(TypeError, match="param_group must be a dict"):
        opt.add_param_group([p for p in model[2].parameters()])
    opt.add_param_group({"params": model[2].parameters(), "lr": 0.05})
    assert len(opt.param_groups) == 2 and len(opt.last_consolidation) == 2
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()  # the failed add left nothing behind: the step sees two valid groups


def test_step_refuses_bad_consolidation_and_diffusion():
    p = nn.Parameter(torch.zeros(3))
    opt = HeisenbergSGD([p], lr=0.1, D=0.1, seed=0)
    p.grad = torch.ones(3)
    before = p.detach().clone()
    with pytest.raises(ValueError, match="consolidation must be >= 0, got consolidation=-5"):
        opt.step(consolidation=-5)
    with pytest.raises(ValueError, match="diffusion must be > 0"):
        opt.step(diffusion=-0.1)
    with pytest.raises(ValueError, match="consolidation must be finite"):
        opt.step(consolidation=[float("nan")])
    assert torch.equal(p.detach(), before) and opt.events == []  # refused before any update or kick


def test_nonfinite_gradient_raises():
    p = nn.Parameter(torch.zeros(3))
    opt = HeisenbergSGD([p], lr=0.1, D=0.1, seed=0)
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    with pytest.raises(NonFiniteError):
        opt.step()


# ------------------------------------------------------------------ resume
@pytest.mark.parametrize("controller", [False, True])
def test_state_dict_resume_is_bit_identical(controller):
    x, y = _data()
    cfg = ControllerConfig(warmup=2, cooldown=3, kick_threshold=0.05) if controller else False
    kw = dict(lr=0.05, momentum=0.9, D_inject=1e-3, D=1e-3, kick_cooldown=4, controller=cfg)
    m = _mlp()
    opt = HeisenbergSGD(m.parameters(), seed=11, **kw)
    _train(m, opt, 6, x, y)
    ckpt = copy.deepcopy({"model": m.state_dict(), "opt": opt.state_dict()})
    _train(m, opt, 8, x, y)
    ref = _flat(m)

    m2 = _mlp(seed=99)
    opt2 = HeisenbergSGD(m2.parameters(), seed=12345, **kw)  # different seed: the state restores it
    m2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["opt"])
    _train(m2, opt2, 8, x, y)
    assert torch.equal(_flat(m2), ref)
    assert opt2.events == opt.events
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


# ------------------------------------------------------------------ controller
def test_controller_explore_bounded_and_logged():
    p = nn.Parameter(torch.zeros(10, dtype=torch.float64))
    cfg = ControllerConfig(warmup=2, cooldown=3, explore_threshold=10.0, lr_factor=1.5, noise_factor=2.0,
                           max_lr=0.3, max_D_inject=1e-3)
    opt = HeisenbergSGD([p], lr=0.1, D=1e-4, D_inject=1e-4, controller=cfg, seed=0)
    for _ in range(40):
        p.grad = torch.full_like(p, 1.0)  # C = 10/(1e-4*10) = 1e4 > 10: explore
        opt.step()
    ev = opt.events
    assert ev and all(e["action"] == "explore" for e in ev)
    assert ev[0]["step"] == 2  # warm-up respected
    steps = [e["step"] for e in ev]
    assert all(b - a >= 3 for a, b in zip(steps, steps[1:]))  # cool-down respected
    assert ev[0]["lr_after"] == pytest.approx(0.15) and ev[0]["D_inject_after"] == pytest.approx(2e-4)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.3)  # capped
    assert opt.param_groups[0]["D_inject"] == pytest.approx(1e-3)
    assert all(e["lr_after"] <= 0.3 + 1e-15 and e["D_inject_after"] <= 1e-3 + 1e-15 for e in ev)
    n = len(ev)
    for _ in range(10):  # at both caps: no more actions
        p.grad = torch.full_like(p, 1.0)
        opt.step()
    assert len(opt.events) == n


def test_controller_kicks_on_low_C_with_cooldown():
    p = nn.Parameter(torch.zeros(10, dtype=torch.float64))
    cfg = ControllerConfig(warmup=5, cooldown=4)
    opt = HeisenbergSGD([p], lr=0.1, D=1e-2, controller=cfg, seed=0)
    for _ in range(20):
        p.grad = torch.zeros_like(p)  # C = 0
        opt.step()
    assert [e["step"] for e in opt.events] == [5, 9, 13, 17]
    assert all(e["action"] == "kick" for e in opt.events)


def test_controller_noise_init_when_no_noise():
    p = nn.Parameter(torch.zeros(10, dtype=torch.float64))
    opt = HeisenbergSGD([p], lr=0.1, controller=ControllerConfig(warmup=0, noise_init=1e-5), seed=0)
    p.grad = torch.ones_like(p)
    opt.step(consolidation=50.0)
    assert opt.param_groups[0]["D_inject"] == pytest.approx(1e-5)
    assert opt.events[0]["D_inject_before"] == 0.0


def test_complex_parameters_are_refused_with_what_to_do():
    """A complex parameter's ||g||^2, noise and kick would not be those of its real coordinates (torch's
    .float() drops the imaginary part): refused, at construction and in add_param_group."""
    z = torch.nn.Parameter(torch.ones(3, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"parameter 0 of this group is complex \(torch.complex64, shape \(3,\)\).*"
                                        r"view_as_real"):
        HeisenbergSGD([z], lr=0.1, D_inject=0.01)
    opt = HeisenbergSGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    with pytest.raises(TypeError, match="complex"):
        opt.add_param_group({"params": [z]})
    assert len(opt.param_groups) == 1  # the refused group was not kept


@pytest.mark.parametrize("dtype, D_inject, warns", [
    (torch.bfloat16, 1e-6, True),    # sigma 4.5e-5 against a spacing of 7.8e-3 at |p| = 1: rounds away
    (torch.float32, 1e-14, True),    # sigma 4.5e-9 against 1.2e-7
    (torch.float32, 1e-12, False),   # sigma 4.5e-8 = 0.38 of the spacing: the variance is kept (rounded)
    (torch.float32, 1e-6, False),    # sigma 4.5e-5: kept
    (torch.bfloat16, 1e-2, False),   # sigma 4.5e-3 = 0.58 of the spacing: kept (rounded)
])
def test_noise_below_the_parameters_resolution_warns_once(dtype, D_inject, warns):
    """sqrt(2 D_inject lr) below a fifth of the spacing of the parameters' dtype: one warning, and it is so
    (nothing but the drift moved them); at a third of the spacing or more the variance is kept: no warning."""
    p = torch.nn.Parameter(torch.ones(1000, dtype=dtype))
    opt = HeisenbergSGD([p], lr=1e-3, D_inject=D_inject, kick_threshold=None, seed=0)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(3):
            p.grad = torch.full_like(p, 1e-3)
            opt.step()
    hits = [w for w in rec if "rounds back to p" in str(w.message)]
    assert len(hits) == (1 if warns else 0)
    if warns:
        assert f"D_inject = {D_inject:.3g}" in str(hits[0].message)
        # what it says is so: the parameters moved by the drift alone (no entry off the deterministic value)
        ref = torch.ones(1000, dtype=dtype)
        for _ in range(3):
            ref = ref - 1e-3 * torch.full_like(ref, 1e-3)
        assert float((p.detach().float() - ref.float()).abs().max()) <= float(torch.finfo(dtype).eps)
