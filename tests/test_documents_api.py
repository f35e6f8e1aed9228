"""The documents' API (``hhld.HeisenbergLearning``): the documents' scripts run unchanged and give
the documents' output bit for bit under ``np.random.seed``; explicit generators, printing,
thresholds, and clear errors for bad user functions."""
import contextlib
import importlib.util
import io
import math
import os
import pathlib

import numpy as np
import pytest

import hhld
from hhld import HeisenbergLearning

_spec = importlib.util.spec_from_file_location("documents_reference",
                                               pathlib.Path(__file__).with_name("documents_reference.py"))
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)
double_well_loss, double_well_grad = ref.double_well_loss, ref.double_well_grad


def _assert_same(a: dict, b: dict):
    """Every number of the documents' Examples 1-4 identical, bit for bit, and the same printed text."""
    assert a["printed"] == b["printed"]
    assert a["hbar"] == b["hbar"]
    for ex in ("example1", "example2"):
        ra, rb = a[ex], b[ex]
        assert set(ra) == set(rb) == {"trajectory", "losses", "consolidations", "transitions", "final_theta",
                                      "final_loss"}
        for k in ("trajectory", "losses", "consolidations", "final_theta"):
            assert ra[k].shape == rb[k].shape, (ex, k)
            assert ra[k].dtype == rb[k].dtype, (ex, k)
            assert np.array_equal(ra[k], rb[k]), (ex, k)
        assert ra["transitions"] == rb["transitions"]
        assert ra["final_loss"] == rb["final_loss"] and type(ra["final_loss"]) is type(rb["final_loss"])
    for k in ("example2_initial_loss", "example3", "example4", "example4_fit"):
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_examples_bit_identical_to_step_by_step_reference(seed):
    ours = ref.documents_examples(HeisenbergLearning, seed)
    theirs = ref.documents_examples(ref.ReferenceHeisenbergLearning, seed)
    _assert_same(ours, theirs)
    assert ours["printed"].count("Phase transition detected") == len(ours["example1"]["transitions"]) + len(
        ours["example2"]["transitions"])
    assert len(ours["example1"]["transitions"]) > 0  # the kick path is exercised


def test_negative_control_other_seed_differs():
    a = ref.documents_examples(HeisenbergLearning, 0)
    b = ref.documents_examples(ref.ReferenceHeisenbergLearning, 1)
    assert not np.array_equal(a["example1"]["trajectory"], b["example1"]["trajectory"])


documents_class = ref.load_documents_class()
needs_spec = pytest.mark.skipif(documents_class is None, reason=f"the specification is not at {ref.SPEC_DIR}")


@needs_spec
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_examples_bit_identical_to_documents_own_class(seed):
    _assert_same(ref.documents_examples(HeisenbergLearning, seed), ref.documents_examples(documents_class, seed))


@needs_spec
def test_documents_script_unchanged_same_stdout_and_figures(tmp_path, monkeypatch):
    """The documents' whole script (class, Examples 1-4, figures), read from the spec, run once with
    its own class and once with hhld's: same stdout and byte-identical PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    block = ref.spec_code_block()
    cut = block.index("# ====")
    runs = {}
    for who in ("documents", "hhld"):
        d = tmp_path / who
        d.mkdir()
        monkeypatch.chdir(d)
        ns: dict = {"__name__": "documents_script"}
        exec(compile(block[:cut], "documents-class", "exec"), ns)  # noqa: S102 - read-only spec
        if who == "hhld":
            ns["HeisenbergLearning"] = HeisenbergLearning
        np.random.seed(0)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(block[cut:], "documents-examples", "exec"), ns)  # noqa: S102
        plt.close("all")
        runs[who] = (buf.getvalue(), {p.name: p.read_bytes() for p in sorted(d.glob("*.png"))})
    assert runs["hhld"][0] == runs["documents"][0]
    assert "ALL EXAMPLES COMPLETED SUCCESSFULLY" in runs["hhld"][0]
    assert sorted(runs["hhld"][1]) == ["heisenberg_double_well.png", "heisenberg_highdim.png",
                                       "heisenberg_tunneling_rate.png"]
    assert runs["hhld"][1] == runs["documents"][1]


def test_documents_script_runs_unchanged():
    np.random.seed(0)
    model = HeisenbergLearning(loss_fn=double_well_loss, loss_grad_fn=double_well_grad, dim=2, eta=0.1, D=0.05,
                               lam=0.001, verbose=False)
    assert model.hbar == pytest.approx(math.sqrt(0.1 * 0.05))
    results = model.train(np.array([0.5, 0.5]), n_steps=500, dt=0.01)
    assert results["trajectory"].shape == (501, 2)
    assert results["losses"].shape == (500,) and results["consolidations"].shape == (500,)
    assert results["final_loss"] == results["losses"][-1]
    assert all(t > 10 for t in results["transitions"])
    np.testing.assert_allclose(results["trajectory"][0], [0.5, 0.5])
    assert np.isfinite(model.consolidation_ratio(np.array([0.3, 0.1])))
    assert model.step(np.array([0.5, 0.5]), 0.0, dt=0.01).shape == (2,)
    jumped = model.apply_tunneling(np.zeros(2))
    assert np.linalg.norm(jumped) == pytest.approx(3 * model.hbar)
    # equal-loss wells: the documents' straight-line action is 0, so P = 1
    assert model.tunneling_probability(np.array([-1.0, 0.0]), np.array([1.0, 0.0])) == 1.0
    p = model.tunneling_probability(np.array([1.0, 0.0]), np.array([0.0, 0.0]))
    assert p == pytest.approx(math.exp(-math.sqrt(2 * 0.1 * 1.0) * 1.0 / model.hbar))


def test_methods_bit_identical_to_reference():
    for name, args in (("step", (np.array([0.3, -0.2]), 0.0, 0.01)), ("apply_tunneling", (np.array([0.3, -0.2]),)),
                       ("consolidation_ratio", (np.array([0.3, -0.2]),))):
        out = []
        for cls in (HeisenbergLearning, ref.ReferenceHeisenbergLearning):
            np.random.seed(5)
            out.append(getattr(cls(double_well_loss, double_well_grad, 2, D=0.05), name)(*args))
        assert np.array_equal(out[0], out[1]), name


def test_float32_user_functions_and_integer_start_as_the_documents():
    """dtypes follow the documents' arithmetic: float32 losses / gradients give float32 series, an
    integer start is promoted by the first step."""
    def loss32(t):
        return np.float32(double_well_loss(t))

    def grad32(t):
        return double_well_grad(t).astype(np.float32)

    for start in (np.array([1, 0]), np.array([0.5, 0.5], dtype=np.float32)):
        out = []
        for cls in (HeisenbergLearning, ref.ReferenceHeisenbergLearning):
            np.random.seed(3)
            with contextlib.redirect_stdout(io.StringIO()):
                out.append(cls(loss32, grad32, 2, eta=0.1, D=0.05).train(start, 300))
        a, b = out
        for k in ("trajectory", "losses", "consolidations", "final_theta"):
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
        assert a["losses"].dtype == np.float32 and a["transitions"] == b["transitions"]


def test_explicit_rng_keeps_its_meaning_and_leaves_global_state_alone():
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    runs = [HeisenbergLearning(double_well_loss, double_well_grad, 2, D=0.05, rng=np.random.default_rng(3),
                               verbose=False).train(np.zeros(2), 300) for _ in range(2)]
    assert np.array_equal(runs[0]["trajectory"], runs[1]["trajectory"])
    assert np.array_equal(np.random.get_state()[1], before)
    seeded = HeisenbergLearning(double_well_loss, double_well_grad, 2, D=0.05, seed=3, verbose=False).train(
        np.zeros(2), 300)
    assert np.array_equal(seeded["trajectory"], runs[0]["trajectory"])  # seed=3 is rng=default_rng(3)
    np.random.seed(3)
    glob = HeisenbergLearning(double_well_loss, double_well_grad, 2, D=0.05, verbose=False).train(np.zeros(2), 300)
    assert not np.array_equal(glob["trajectory"], runs[0]["trajectory"])  # global RandomState != Generator
    with pytest.raises(ValueError, match="either rng= or seed="):
        HeisenbergLearning(double_well_loss, double_well_grad, 2, rng=1, seed=1)


def test_prints_by_default_and_verbose_false_silences(capsys):
    np.random.seed(1)
    r = HeisenbergLearning(double_well_loss, double_well_grad, 2, D=0.05).train(np.array([0.5, 0.5]), 500)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(r["transitions"]) > 0
    first = r["transitions"][0]
    assert out[0] == f"Step {first}: Phase transition detected (C={r['consolidations'][first]:.3f})"
    np.random.seed(1)
    HeisenbergLearning(double_well_loss, double_well_grad, 2, D=0.05, verbose=False).train(np.array([0.5, 0.5]), 500)
    assert capsys.readouterr().out == ""


def test_any_threshold_negative_never_nan_refused():
    m = HeisenbergLearning(double_well_loss, double_well_grad, 2, D=0.05, verbose=False)
    assert m.train(np.array([0.5, 0.5]), 300, transition_threshold=-1.0)["transitions"] == []
    assert m.train(np.array([0.5, 0.5]), 30, transition_threshold=math.inf)["transitions"] == list(range(11, 30))
    with pytest.raises(ValueError, match="transition_threshold must be a real number.*got nan"):
        m.train(np.zeros(2), 10, transition_threshold=float("nan"))


def test_other_integrator_and_landscape_instance():
    m = HeisenbergLearning(hhld.landscapes.double_well_2d(), None, dim=2, D=0.05, seed=1, verbose=False)
    assert m.train(np.zeros(2), 20)["trajectory"].shape == (21, 2)
    lm = HeisenbergLearning(double_well_loss, double_well_grad, 2, D=0.05, seed=1, verbose=False,
                            integrator="leimkuhler_matthews")
    r = lm.train(np.array([0.5, 0.5]), 200, transition_threshold=-1)
    assert r["trajectory"].shape == (201, 2) and r["transitions"] == []
    with pytest.raises(ValueError, match="unknown integrator"):
        HeisenbergLearning(double_well_loss, double_well_grad, 2, integrator="rk4")


def test_torch_theta_that_requires_grad_works():
    torch = pytest.importorskip("torch")
    t = torch.tensor([0.5, 0.5], dtype=torch.float64, requires_grad=True)
    np.random.seed(0)
    a = HeisenbergLearning(double_well_loss, double_well_grad, 2, D=0.05, verbose=False).train(t, 100)
    np.random.seed(0)
    b = HeisenbergLearning(double_well_loss, double_well_grad, 2, D=0.05, verbose=False).train(np.array([0.5, 0.5]),
                                                                                               100)
    assert np.array_equal(a["trajectory"], b["trajectory"])


def test_bad_inputs_named():
    with pytest.raises(ValueError, match="D must be >= 0"):
        HeisenbergLearning(double_well_loss, double_well_grad, 2, D=-0.1)
    with pytest.raises(ValueError, match="eta must be > 0"):
        HeisenbergLearning(double_well_loss, double_well_grad, 2, eta=0.0)
    m = HeisenbergLearning(double_well_loss, double_well_grad, 2, verbose=False)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        m.train(np.zeros(3), 10)
    with pytest.raises(ValueError, match="dt must be > 0"):
        m.train(np.zeros(2), 10, dt=0.0)


@pytest.mark.parametrize("grad, exc, pattern", [
    (lambda th: np.zeros(3), ValueError, r"loss_grad_fn '<lambda>' returned an array of shape \(3,\).*must have "
                                         r"shape \(2,\)"),
    (lambda th: None, TypeError, r"loss_grad_fn '<lambda>' returned None.*shape \(2,\)"),
    (lambda th: np.zeros((2, 2)), ValueError, r"returned an array of shape \(2, 2\)"),
])
def test_user_gradient_of_wrong_shape_named(grad, exc, pattern):
    m = HeisenbergLearning(double_well_loss, grad, 2, D=0.05, verbose=False)
    with pytest.raises(exc, match=pattern):
        m.train(np.zeros(2), 5)
    with pytest.raises(exc, match=pattern):
        m.step(np.zeros(2))


def test_vector_loss_named():
    m = HeisenbergLearning(lambda th: th ** 2, double_well_grad, 2, D=0.05, verbose=False)
    with pytest.raises(ValueError, match=r"loss_fn '<lambda>' returned an array of shape \(2,\).*scalar"):
        m.train(np.zeros(2), 5)


def test_nan_loss_with_finite_gradient_raises():
    def nan_loss(theta):
        return np.nan if theta[0] > 0.7 else double_well_loss(theta)

    m = HeisenbergLearning(nan_loss, double_well_grad, 2, D=0.05, seed=0, verbose=False)
    with pytest.raises(hhld.NonFiniteError, match=r"loss_fn 'nan_loss' returned nan at step \d+") as err:
        m.train(np.array([0.8, 0.0]), 50)
    assert err.value.quantity == "loss"


def test_nan_gradient_names_step_and_function():
    def bad_grad(theta):
        return np.array([np.nan, 0.0]) if theta[0] > 0.7 else np.array([0.0, 0.0])

    m = HeisenbergLearning(double_well_loss, bad_grad, 2, D=0.05, seed=0, verbose=False)
    with pytest.raises(hhld.NonFiniteError, match="loss_grad_fn 'bad_grad' returned a non-finite gradient") as err:
        m.train(np.array([0.8, 0.0]), 5)
    assert err.value.step == 0
