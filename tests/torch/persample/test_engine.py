"""The per-sample engine against brute-force per-sample gradients (float64), architecture by architecture.

The reference differentiates each sample's loss through one shared forward graph (so dropout masks are the
step's own), and compares ``sum over the covered parameters of ||g_i||^2`` per sample.
"""
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hhld.torch.persample import BatchAxisError, PerSampleSqNorms

from archs import GPT, RNNCls, ViT, cnn_bn

B = 6


def per_sample_reference(model, x, per_loss, names):
    params = dict(model.named_parameters())
    ls = per_loss(model(x))
    out = []
    for i in range(ls.shape[0]):
        gs = torch.autograd.grad(ls[i], [params[n] for n in names], retain_graph=True, allow_unused=True)
        out.append(sum(float((g.double() ** 2).sum()) for g in gs if g is not None))
    return torch.tensor(out, dtype=torch.float64)


def measure(model, x, per_loss, seed=0, **kw):
    """The engine's per-sample norms (scaled back from the mean loss) and the reference on the same graph."""
    eng = PerSampleSqNorms(model, **kw).attach()
    torch.manual_seed(seed)
    loss = per_loss(model(x)).mean()
    model.zero_grad()
    loss.backward()
    eng.detach()
    got = None
    if eng.passes and eng.passes[-1] is not None:
        n = eng.passes[-1].shape[0]  # the batch the engine found (B, also for a (T, B, F) input)
        got = eng.passes[-1] * n * n
    
    torch.manual_seed(seed)
    ref = per_sample_reference(model, x, per_loss, sorted(eng.covered_last)) if eng.covered_last else None
    return eng, got, ref


def ce_tokens(y):
    return lambda out: F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(1)


def ce(y):
    return lambda out: F.cross_entropy(out, y, reduction="none")


class Raw(nn.Module):
    """Raw parameters: x @ W, an elementwise scale, PReLU (a vmap VJP)."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(5, 7) * .3)
        self.scale = nn.Parameter(torch.ones(7))
        self.lin = nn.Linear(7, 3)
        self.act = nn.PReLU(7)

    def forward(self, x):
        return self.lin(self.act((x @ self.W) * self.scale))


class Folded(nn.Module):
    """A Linear on x.view(-1, E) (batch merged with time), then GroupNorm on (B, C, T)."""

    def __init__(self):
        super().__init__()
        self.emb, self.lin, self.out = nn.Embedding(11, 6), nn.Linear(6, 6), nn.Linear(6, 3)
        self.gn = nn.GroupNorm(2, 6)

    def forward(self, ids):
        b, t = ids.shape
        h = self.lin(self.emb(ids).view(-1, 6)).view(b, t, 6)
        return self.out(self.gn(h.transpose(1, 2)).transpose(1, 2).mean(1))


def convs():
    return nn.Sequential(nn.Conv1d(3, 4, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
                         nn.Conv1d(4, 4, 3, groups=2, padding="same"), nn.Flatten(), nn.RMSNorm(32), nn.Linear(32, 3))


def _idx(n, t, v=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, v, (n, t), generator=g)


def _case(name):
    torch.manual_seed(0)
    yc = torch.randint(0, 3, (B,), generator=torch.Generator().manual_seed(1))
    if name.startswith("gpt"):
        T = 8
        n = T if name == "gpt_B_eq_T" else B
        m = GPT(17, T, attn="mha" if "mha" in name else "sdpa", p=0.2 if "drop" in name else 0.0).double()
        idx = _idx(n, T)
        return m, idx, ce_tokens(_idx(n, T, seed=2))
    if name.startswith(("lstm", "gru", "rnn")):
        cell, bf = name.split("_")[0], name.endswith("bf")
        layers, bidir = (2, True) if "deep" in name else (1, False)
        xs = torch.randn(B, 7, 5, dtype=torch.float64)
        m = RNNCls(cell, batch_first=bf, layers=layers, bidir=bidir).double()
        return m, xs if bf else xs.transpose(0, 1).contiguous(), ce(yc)
    if name == "vit":
        return ViT().double(), torch.randn(B, 3, 8, 8, dtype=torch.float64), ce(torch.randint(0, 4, (B,)))
    if name == "cnn_bn_eval":
        m = cnn_bn().double().eval()
        return m, torch.randn(B, 1, 8, 8, dtype=torch.float64), ce(yc)
    if name == "raw":
        return Raw().double(), torch.randn(B, 5, dtype=torch.float64), ce(yc)
    if name == "folded":
        return Folded().double(), _idx(B, 4, v=11), ce(yc)
    if name == "convs":
        return convs().double(), torch.randn(B, 3, 8, dtype=torch.float64), ce(yc)
    raise KeyError(name)


CASES = ["gpt_sdpa", "gpt_B_eq_T", "gpt_mha", "gpt_mha_drop", "gpt_sdpa_drop", "lstm_bf", "lstm_sf", "gru_bf",
         "gru_sf", "rnn_bf", "rnn_sf", "lstm_deep_bf", "vit", "cnn_bn_eval", "raw", "folded", "convs"]


@pytest.mark.parametrize("name", CASES)
def test_exact_on_every_architecture(name):
    model, x, per_loss = _case(name)
    eng, got, ref = measure(model, x, per_loss)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert eng.covered_last == trainable, eng.reasons
    assert torch.allclose(got, ref, rtol=1e-9, atol=0), (got, ref)


def test_train_mode_batchnorm_couples_what_is_upstream_only():
    model = cnn_bn().double().train()
    eng, got, ref = measure(model, torch.randn(B, 1, 8, 8, dtype=torch.float64), ce(torch.randint(0, 3, (B,))))
    assert set(eng.reasons) == {"0.weight", "0.bias"} and eng.coupled == {"0.weight", "0.bias"}
    assert all(r.startswith("coupled: batch norm in training mode") for r in eng.reasons.values())
    # everything downstream, and the batch norm's own affine parameters (statistics held fixed), is exact
    assert "1.weight" in eng.covered_last and torch.allclose(got, ref, rtol=1e-9)


@pytest.mark.parametrize("scale", [1e-25, 1.0, 1e20])
def test_float32_losses_of_any_scale(scale):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    yc = torch.randint(0, 3, (B,))
    eng, got, ref = measure(m, torch.randn(B, 5), lambda out: scale * F.cross_entropy(out, yc, reduction="none"))
    assert len(eng.covered_last) == 4
    assert torch.allclose(got, ref, rtol=1e-5), (got / ref)


def test_sparse_embedding_and_frozen_parameter():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Embedding(20, 4, sparse=True), nn.Flatten(), nn.Linear(12, 3))
    m[2].bias.requires_grad_(False)
    eng, got, ref = measure(m, torch.randint(0, 20, (B, 3)), ce(torch.randint(0, 3, (B,))))
    assert eng.covered_last == {"0.weight", "2.weight"}
    assert torch.allclose(got, ref, rtol=1e-5)


def test_a_regulariser_in_the_loss_is_split_and_a_per_sample_use_outside_caught_by_the_sum_check():
    """A term of the parameters alone in the loss (``0.1 * |W|^2``): every sample shares its gradient ``R``; the
    engine reports ``R . grad`` and ``|R|^2`` (``shared_last``) and keeps the parameter. A parameter used with
    the batch after the forward (``x @ W.T``, a per-sample term the engine does not see) fails the sum check."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(5, 3))
    eng = PerSampleSqNorms(m).attach()
    x = torch.randn(B, 5)
    loss = F.cross_entropy(m(x), torch.randint(0, 3, (B,))) + 0.1 * m[0].weight.square().sum()
    loss.backward()
    assert eng.covered_last == {"0.weight", "0.bias"} and set(eng.shared_last) == {"0.weight"}
    R = 0.2 * m[0].weight.detach()
    dot, sq = eng.shared_last["0.weight"]
    assert dot == pytest.approx(float((R * m[0].weight.grad).sum()), rel=1e-5)
    assert sq == pytest.approx(float((R * R).sum()), rel=1e-5)
    m.zero_grad()
    eng2 = PerSampleSqNorms(m).attach()
    (F.cross_entropy(m(x), torch.randint(0, 3, (B,))) + (x @ m[0].weight.T).pow(2).mean()).backward()
    assert eng2.covered_last == {"0.bias"} and not eng2.shared_last
    assert "per-sample gradients sum to something else" in eng2.reasons["0.weight"]


def test_one_pass_per_backward_under_accumulation():
    m = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    eng = PerSampleSqNorms(m).attach()
    x, y = torch.randn(B, 5, dtype=torch.float64), torch.randint(0, 3, (B,))
    for h in (slice(0, 2), slice(2, 6)):
        (F.cross_entropy(m(x[h]), y[h]) / 2).backward()
    assert [tuple(p.shape) for p in eng.passes] == [(2,), (4,)]


def test_layers_that_disagree_about_the_batch_raise_a_clear_error():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.LSTM(3, 4), nn.LSTM(3, 4, batch_first=True)

        def forward(self, x):
            return self.a(x)[0].sum() + self.b(x)[0].sum()

    m = Two()
    PerSampleSqNorms(m).attach()
    with pytest.raises(BatchAxisError, match="pass batch_size= and batch_axis="):
        m(torch.ones(5, 2, 3))


def test_sequence_first_input_is_found_from_the_recurrent_layer():
    """(T, B, F) into nn.LSTM(batch_first=False): B, never T."""
    m = RNNCls("lstm", batch_first=False).double()
    xs = torch.randn(7, B, 5, dtype=torch.float64)
    eng, got, ref = measure(m, xs, ce(torch.randint(0, 3, (B,))))
    assert got.shape == (B,) and torch.allclose(got, ref, rtol=1e-9)


class _HF(nn.Module):
    """A Hugging Face model called on token ids with fixed extra keyword arguments; returns the logits."""

    def __init__(self, net, **extra):
        super().__init__()
        self.m, self.extra = net, extra

    def forward(self, ids):
        kw = {k: (ids if v == "ids" else v) for k, v in self.extra.items()}
        return self.m(input_ids=ids, **kw).logits


@pytest.mark.skipif(not __import__("importlib").util.find_spec("transformers"), reason="transformers not installed")
@pytest.mark.parametrize("arch", ["gpt2", "bert", "t5", "t5_pad", "opt", "llama"])
def test_hugging_face_models_built_from_a_config(arch):
    """GPT-2; BERT with a padding mask (token types from a buffer); T5 in train mode (relative position bias as
    the additive mask of scaled_dot_product_attention, with attention dropout); OPT (positions from
    torch.ones(B, T) made inside its forward); Llama (RMSNorm, rotary positions, grouped-query attention)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    warnings.filterwarnings("ignore")
    import transformers as tf

    torch.manual_seed(0)
    ids = _idx(B, 8, v=20)
    per_loss = ce_tokens(_idx(B, 8, v=20, seed=3))
    if arch == "gpt2":
        model = _HF(tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=20, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                                     bos_token_id=0, eos_token_id=0)))
    elif arch == "bert":
        mask = torch.ones(B, 8, dtype=torch.long)
        mask[0, 6:] = 0
        model = _HF(tf.BertForSequenceClassification(tf.BertConfig(
            vocab_size=20, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=16, num_labels=3)), attention_mask=mask)
        per_loss = ce(torch.randint(0, 3, (B,)))
    elif arch in ("t5", "t5_pad"):
        # with a padding mask, transformers' mask functions index it by arange(B)[:, None, None, None]: the relative
        # position bias meets it (until 2026-12-01 that lost the batch axis, and the bias was not covered)
        mask = torch.ones(B, 8, dtype=torch.long)
        mask[1, 5:] = 0
        extra = dict(attention_mask=mask) if arch == "t5_pad" else {}
        model = _HF(tf.T5ForConditionalGeneration(tf.T5Config(vocab_size=20, d_model=16, d_kv=4, d_ff=32, num_layers=2,
                                                               num_heads=4, decoder_start_token_id=0,
                                                               dropout_rate=0.1)), decoder_input_ids="ids", **extra)
    elif arch == "llama":
        model = _HF(tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=20, hidden_size=16, intermediate_size=32,
                                                       num_hidden_layers=2, num_attention_heads=4,
                                                       num_key_value_heads=2, max_position_embeddings=16)))
    else:
        model = _HF(tf.OPTForCausalLM(tf.OPTConfig(vocab_size=20, hidden_size=16, ffn_dim=32, num_hidden_layers=2,
                                                   num_attention_heads=4, max_position_embeddings=16,
                                                   word_embed_proj_dim=16)))
    model = model.double().train()
    eng, got, ref = measure(model, ids, per_loss)
    assert eng.covered_last == {n for n, p in model.named_parameters() if p.requires_grad}, eng.reasons
    assert torch.allclose(got, ref, rtol=1e-6 if arch in ("t5", "t5_pad", "llama") else 1e-9)


def test_non_reentrant_checkpointing():
    from torch.utils.checkpoint import checkpoint

    class CK(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c = nn.Linear(4, 8), nn.Linear(8, 3)
            self.b = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8))

        def forward(self, x):
            return self.c(checkpoint(self.b, torch.tanh(self.a(x)), use_reentrant=False))

    eng, got, ref = measure(CK().double(), torch.randn(B, 4, dtype=torch.float64), ce(torch.randint(0, 3, (B,))))
    assert len(eng.covered_last) == 8 and torch.allclose(got, ref, rtol=1e-9)


@pytest.mark.parametrize("user_flushes", [False, True])
def test_subnormals_flushed_while_computing_and_the_users_setting_restored(user_flushes):
    from hhld.torch.persample.engine import _flush_subnormals

    def flushed():
        return (torch.tensor([1e-38], dtype=torch.float32) * 0.01).item() == 0.0

    if not torch.set_flush_denormal(user_flushes) and user_flushes:
        pytest.skip("this CPU cannot flush subnormals")
    try:
        assert flushed() is user_flushes
        with _flush_subnormals():
            assert flushed() or not torch.set_flush_denormal(True)
        assert flushed() is user_flushes
    finally:
        torch.set_flush_denormal(False)


def test_a_batch_long_operand_made_inside_the_forward_is_refused_above_the_limit(monkeypatch):
    """OPT's positions come from torch.ones(B, T) made inside the forward: exact below DIAGONAL_LIMIT (above), and
    above it the parameter is uncovered with a reason that says what to do."""
    import hhld.torch.persample.engine as engine_mod

    class Pos(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(11, 4), nn.Embedding(9, 4)
            self.out = nn.Linear(4, 3)

        def forward(self, ids):
            mask = torch.ones(ids.shape[0], ids.shape[1])
            return self.out(self.tok(ids) + self.pos((torch.cumsum(mask, 1) - 1).long())).mean(1)

    torch.manual_seed(0)
    m = Pos().double()
    ids = _idx(B, 5, v=11)
    eng, got, ref = measure(m, ids, ce(torch.randint(0, 3, (B,))))
    assert "pos.weight" in eng.covered_last and torch.allclose(got, ref, rtol=1e-9)
    monkeypatch.setattr(engine_mod, "DIAGONAL_LIMIT", 10)
    eng, _, _ = measure(m, ids, ce(torch.randint(0, 3, (B,))))
    assert "pos.weight" not in eng.covered_last
    assert "attention_mask=torch.ones_like(input_ids)" in eng.reasons["pos.weight"]


def test_a_measured_pass_leaves_no_activation_alive():
    """The hook on a recorded output and the record itself refer to each other through the output tensor, a
    cycle the garbage collector cannot see through autograd: the engine breaks it when a pass ends, so a
    monitor left on does not keep every measured step's activations (it grew by ~1 GB per grokking cell)."""
    import gc
    import weakref

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    seen = []
    model[0].register_forward_hook(lambda m, a, out: seen.append(weakref.ref(out)))
    eng = PerSampleSqNorms(model).attach()
    for _ in range(3):
        x = torch.randn(B, 5, dtype=torch.float64)
        F.cross_entropy(model(x), torch.randint(0, 3, (B,))).backward()
        assert eng.covered_last == {n for n, _ in model.named_parameters()}
        eng.reset()
    eng.detach()
    gc.collect()
    assert [r() is None for r in seen] == [True, True, True]


def test_a_disabled_engine_leaves_no_hook_on_the_model():
    """The monitor disables the engine between tier-1 steps: the model's forward then runs with no engine hook,
    and enabling it again measures the next pass."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    mods = [model, model[0], model[2]]
    hooked = lambda: sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in mods)  # noqa: E731
    eng = PerSampleSqNorms(model)
    eng.enabled = True
    assert hooked() == 0  # not attached: enabling alone hooks nothing
    eng.attach()
    assert hooked() == 6
    eng.enabled = False
    assert hooked() == 0
    x = torch.randn(B, 3, dtype=torch.float64)
    model(x).sum().backward()
    assert eng.passes == []
    eng.enabled = True
    assert hooked() == 6
    model.zero_grad()
    model(x).pow(2).sum().backward()
    assert len(eng.passes) == 1 and eng.passes[0].shape == (B,)
    eng.detach()
    assert hooked() == 0
    eng.enabled = True
    assert hooked() == 0  # detached stays detached


class _Checkpointed(nn.Module):
    """A Linear, then a reentrant activation-checkpoint segment (torch's default kind) holding another Linear."""

    def __init__(self, calls):
        super().__init__()
        self.first, self.inner = nn.Linear(3, 4), nn.Linear(4, 2)
        self.calls = calls

    def segment(self, h):
        self.calls.append(torch.is_grad_enabled())
        return self.inner(h).tanh()

    def forward(self, x):
        return torch.utils.checkpoint.checkpoint(self.segment, self.first(x), use_reentrant=True)


def test_reentrant_checkpoint_segments_are_covered_and_unchanged_elsewhere():
    import torch.utils.checkpoint  # noqa: F401

    calls = []
    model = _Checkpointed(calls).double()
    x = torch.randn(B, 3, dtype=torch.float64)

    def grads():
        model.zero_grad()
        model(x).pow(2).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    assert calls == [False, True]  # torch's reentrant checkpoint: a no-grad forward, recomputed in backward
    names = [n for n, _ in model.named_parameters()]
    ps = list(model.parameters())  # reference: each sample alone, without the checkpoint (autograd.grad refuses it)
    ref = torch.tensor([sum(float((g ** 2).sum()) for g in torch.autograd.grad(
        model.inner(model.first(x[i:i + 1])).tanh().pow(2).sum(), ps)) for i in range(B)], dtype=torch.float64)
    eng = PerSampleSqNorms(model).attach()
    calls.clear()
    watched = grads()
    assert calls == [True] and eng.checkpoint_segments == 1  # run directly while the engine watches
    assert eng.covered_last == set(names)
    assert torch.allclose(eng.passes[-1], ref, rtol=1e-10, atol=0)
    for a, b in zip(plain, watched):  # the same gradients as torch's checkpoint
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    eng.enabled = False
    calls.clear()
    grads()
    assert calls == [False, True]  # a disabled engine leaves the checkpoint to torch
    eng.detach()
    calls.clear()
    grads()
    assert calls == [False, True] and eng.checkpoint_segments == 1


@pytest.mark.skipif(not __import__("importlib").util.find_spec("transformers"), reason="transformers not installed")
@pytest.mark.parametrize("reentrant", [True, False])
def test_hugging_face_gradient_checkpointing(reentrant):
    """A Llama with ``gradient_checkpointing_enable()``: the per-sample norms equal those of the same weights
    without checkpointing (themselves checked against the reference above), every parameter covered."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    warnings.filterwarnings("ignore")
    import transformers as tf

    torch.manual_seed(0)
    model = _HF(tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=20, hidden_size=16, intermediate_size=32,
                                                   num_hidden_layers=2, num_attention_heads=4,
                                                   num_key_value_heads=2, max_position_embeddings=16))).double().train()
    ids, per_loss = _idx(B, 8, v=20), ce_tokens(_idx(B, 8, v=20, seed=3))

    def engine_norms():
        eng = PerSampleSqNorms(model).attach()
        model.zero_grad()
        per_loss(model(ids)).mean().backward()
        eng.detach()
        return eng

    plain = engine_norms()
    model.m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    ck = engine_norms()
    assert ck.covered_last == plain.covered_last == {n for n, p in model.named_parameters() if p.requires_grad}
    assert torch.allclose(ck.passes[-1], plain.passes[-1], rtol=1e-12, atol=0)
    assert (ck.checkpoint_segments > 0) == reentrant


def test_passes_accumulating_leaves_torch_autograd_grad_calls_alone():
    """``passes="accumulating"`` (the monitor's): a ``torch.autograd.grad`` call between the forward and the
    backward (a saliency map) does not use up the forward's factors; the backward is measured exactly.
    ``passes="all"`` (the default) measures an ``autograd.grad`` pass itself."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x = torch.randn(B, 3, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in model.named_parameters()]
    ref = per_sample_reference(model, x, lambda out: out.pow(2).sum(1), names)
    eng = PerSampleSqNorms(model, passes="accumulating").attach()
    out = model(x)
    torch.autograd.grad(out[:, 0].sum(), x, retain_graph=True)
    assert eng.passes == []
    model.zero_grad()
    out.pow(2).sum().backward()
    eng.detach()
    assert len(eng.passes) == 1 and torch.allclose(eng.passes[0], ref, rtol=1e-10, atol=0)
    eng = PerSampleSqNorms(model).attach()
    torch.autograd.grad(model(x).pow(2).sum(), list(model.parameters()))
    eng.detach()
    assert len(eng.passes) == 1 and torch.allclose(eng.passes[0], ref, rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match="passes must be 'all' or 'accumulating', got 'some'"):
        PerSampleSqNorms(model, passes="some")


class _Routed(nn.Module):
    """Token routing over the merged (B*T) axis, then back: ``mode`` "mask" (boolean mask, as a simple
    mixture-of-experts), "index" (index_select / index_add, Mixtral-style) or "b_rows" (exactly B routed rows, so
    that a guess from the shape would take them for the batch)."""

    def __init__(self, mode, E=6):
        super().__init__()
        self.mode = mode
        self.emb, self.ex, self.fc = nn.Embedding(20, E), nn.Linear(E, E), nn.Linear(E, 3)

    def forward(self, ids):
        h = self.emb(ids)
        b, t, e = h.shape
        flat = h.reshape(b * t, e)
        if self.mode == "mask":
            m = (ids.reshape(-1) % 2) == 0
            out = flat.clone()
            out[m] = out[m] + self.ex(flat[m])
        else:
            idx = (ids.reshape(-1) % 2 == 0).nonzero().squeeze(1) if self.mode == "index" else \
                (ids.reshape(-1) * 7 % (b * t)).argsort()[:b]
            out = flat.index_add(0, idx, self.ex(flat.index_select(0, idx)))
        return self.fc(out.reshape(b, t, e).mean(1))


class _LastToken(nn.Module):
    """Each sequence's last valid token, ``h[torch.arange(B), last]``: one row per sample, in order."""

    def __init__(self, E=6):
        super().__init__()
        self.emb, self.lin, self.fc = nn.Embedding(20, E), nn.Linear(E, E), nn.Linear(E, 3)

    def forward(self, ids):
        h = self.lin(self.emb(ids)).tanh()
        last = ids[:, 0] % ids.shape[1]
        return self.fc(h[torch.arange(ids.shape[0]), last])


@pytest.mark.parametrize("mode", ["mask", "index", "b_rows"])
def test_routed_rows_are_not_covered_and_the_rest_stays_exact(mode):
    """Rows of unknown samples (token routing) are never taken for the batch from their shape: the expert's
    parameters are not covered, with the reason; every other parameter is exact."""
    from hhld.torch.persample.engine import LOST_NOTE

    torch.manual_seed(0)
    model = _Routed(mode).double()
    ids = _idx(B, 5, v=20)
    eng, got, ref = measure(model, ids, ce(torch.randint(0, 3, (B,))))
    assert eng.covered_last == {"emb.weight", "fc.weight", "fc.bias"}
    assert eng.reasons["ex.weight"] == eng.reasons["ex.bias"] == LOST_NOTE
    assert torch.allclose(got, ref, rtol=1e-9)


def test_last_token_gather_keeps_the_batch_axis():
    torch.manual_seed(0)
    model = _LastToken().double()
    eng, got, ref = measure(model, _idx(B, 5, v=20), ce(torch.randint(0, 3, (B,))))
    assert eng.covered_last == {n for n, _ in model.named_parameters()}
    assert torch.allclose(got, ref, rtol=1e-9)


class _CellLoop(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.cell = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}[kind](3, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        state = None
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state)
        return self.fc(state[0] if self.kind == "lstm" else state)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_recurrent_cells_stepped_in_a_loop(kind, dtype):
    """``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell`` stepped by hand (as in RL policies): exact, and the
    engine leaves the model's outputs and gradients bit for bit as they are without it (the LSTM cell is run as the same
    operations ATen runs on the CPU)."""
    torch.manual_seed(0)
    model = _CellLoop(kind).to(dtype)
    x = torch.randn(B, 4, 3, dtype=dtype)

    def run(watch):
        eng = PerSampleSqNorms(model).attach() if watch else None
        model.zero_grad()
        out = model(x)
        out.pow(2).sum().backward()
        if eng is not None:
            eng.detach()
        return out.detach(), [p.grad.clone() for p in model.parameters()], eng

    out0, g0, _ = run(False)
    out1, g1, eng = run(True)
    assert torch.equal(out0, out1) and all(torch.equal(a, b) for a, b in zip(g0, g1))
    names = [n for n, _ in model.named_parameters()]
    assert eng.covered_last == set(names)
    ref = per_sample_reference(model, x, lambda out: out.pow(2).sum(1), names)
    assert torch.allclose(eng.passes[-1] * 1.0, ref.to(eng.passes[-1].dtype), rtol=1e-4 if dtype == torch.float32
                          else 1e-10)


def _composite_pair(x, w):
    """A torch-function-aware op with two outputs from different autograd nodes, the second computed from the
    first (like a composite LSTM cell)."""
    if torch.overrides.has_torch_function((x, w)):
        return torch.overrides.handle_torch_function(_composite_pair, (x, w), x, w)
    a = (x @ w).tanh()
    return a, a * 2 + 1


def test_an_op_whose_outputs_depend_on_each_other_is_not_covered():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 4))
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            a, b = _composite_pair(x, self.w)
            return self.fc(a + b)

    torch.manual_seed(0)
    model = Pair().double()
    eng, got, ref = measure(model, torch.randn(B, 3, dtype=torch.float64), lambda out: out.pow(2).sum(1))
    assert eng.covered_last == {"fc.weight", "fc.bias"}
    assert "outputs are computed one from another" in eng.reasons["w"]
    assert torch.allclose(got, ref, rtol=1e-9)


_MIXING = {
    "batch centring": (lambda h: h - h.mean(0, keepdim=True), "reduction over the batch axis"),
    "softmax over the batch": (lambda h: h * h.softmax(0), "softmax along the batch axis"),
    "in-batch pair logits a @ b.T": (lambda h: (h @ h.T)[:, :4], "pairs every sample with every other"),
    "in-batch pair logits a @ b.mT": (lambda h: (h @ h.mT)[:, :4], "pairs every sample with every other"),
    "gram of the batch h.T @ h": (lambda h: h @ (h.T @ h), "reduction over the batch axis"),
    "sort over the batch": (lambda h: h.sort(0).values, "sort along the batch axis"),
    "cumsum over the batch": (lambda h: h.cumsum(dim=0), "cumsum along the batch axis"),
    "roll over the batch": (lambda h: h + h.roll(1, 0), "roll along the batch axis"),
    "flip over the batch": (lambda h: h * h.flip(0), "flip along the batch axis"),
    "softmax per sample": (lambda h: h * h.softmax(1), None),
    "sort per sample": (lambda h: h.sort(1).values, None),
    "attention-style q @ k^T per sample": (lambda h: (h[:, :, None] @ h[:, None, :]).sum(1), None),
    # pairings by other ops than a matrix product (triplet / prototype / contrastive losses)
    "cdist of the batch with itself": (lambda h: torch.cdist(h, h)[:, :4], "cdist pairs every sample"),
    "pdist of the batch": (lambda h: h + F.pdist(h).sum(), "pdist pairs every sample"),
    "einsum id,jd->ij": (lambda h: torch.einsum("id,jd->ij", h, h)[:, :4], "einsum 'id,jd->ij' pairs"),
    "einsum with an ellipsis ...d,jd->...j": (lambda h: torch.einsum("...d,jd->...j", h, h)[:, :4], "pairs"),
    "einsum bi,bj->ij (a sum over the batch) recombined": (
        lambda h: h @ torch.einsum("bi,bj->ij", h, h), "reduction over the batch axis"),
    "tensordot over the features": (lambda h: torch.tensordot(h, h, dims=([1], [1]))[:, :4], "tensordot pairs"),
    "inner of the batch with itself": (lambda h: torch.inner(h, h)[:, :4], "inner pairs every sample"),
    "outer of a batched column": (lambda h: h + torch.outer(h[:, 0], h[:, 1])[:, :4], "outer pairs every sample"),
    "broadcast difference h[:, None] - h[None]": (lambda h: (h[:, None] - h[None]).norm(dim=-1)[:, :4],
                                                  "broadcasts two batched tensors against each other"),
    "cosine similarity of h[:, None] and h[None]": (
        lambda h: F.cosine_similarity(h[:, None], h[None], dim=-1)[:, :4], "broadcasts two batched tensors"),
    "einsum bi,bj->bij per sample": (lambda h: torch.einsum("bi,bj->bij", h, h).sum(1), None),
    "einsum with the batch in the ellipsis": (lambda h: torch.einsum("...i,...i->...", h, h)[:, None] * h, None),
    "cdist to fixed centres": (lambda h: torch.cdist(h, torch.ones(4, 4, dtype=h.dtype)), None),
    "broadcast of aligned batched tensors": (lambda h: (h[:, None] * h[:, :, None]).sum(1), None),
    "tensordot per sample with a constant": (lambda h: torch.tensordot(h, torch.eye(4, dtype=h.dtype), dims=1), None),
    # rows of other samples (a lost batch axis) combined with the batch (manifold mixup, a reference sample)
    "manifold mixup h + h[perm]": (lambda h: 0.7 * h + 0.3 * h[_shift(h)], "combines rows of other samples"),
    "index_select over the batch recombined": (lambda h: h * h.index_select(0, _shift(h)), "combines rows of other"),
    "one sample's row against the batch h - h[0]": (lambda h: h - h[0], "combines rows of other samples"),
    "where between the batch and gathered rows": (lambda h: torch.where(h > 0, h, h[_shift(h)]), "combines rows"),
    "concatenation with gathered rows": (lambda h: torch.cat([h, h[_shift(h)]], 1)[:, :4], "combines rows"),
    "gather over the batch recombined": (
        lambda h: h * h.gather(0, _shift(h)[:, None].expand_as(h)), "combines rows of other samples"),
    "take_along_dim over the batch recombined": (
        lambda h: h * torch.take_along_dim(h, _shift(h)[:, None], 0), "combines rows of other samples"),
    "rows gathered in order h[arange(B)]": (lambda h: h[torch.arange(h.shape[0])] + h, None),
    "one column per sample by broadcast indices": (
        lambda h: h[torch.arange(h.shape[0])[:, None], torch.tensor([[0, 1, 3]])].sum(1, keepdim=True) * h, None),
    "rows permuted, no mixing": (lambda h: h[_shift(h)], None),
    "rows permuted and put back (sort / unsort)": (
        lambda h: (2 * h.index_select(0, _shift(h)))[_shift(h).argsort()] + h, None),
    "permuted gradient-free data with the batch": (
        lambda h: h * h.detach()[_shift(h)], None),
    "index_select of the rows in order": (lambda h: h * h.index_select(0, torch.arange(h.shape[0])), None),
    "gather along the features": (lambda h: h * h.gather(1, torch.arange(4).roll(1).expand_as(h)), None),
    "take_along_dim along the features": (lambda h: h * h.take_along_dim(torch.arange(4).flip(0)[None], 1), None),
    "rows routed and put back in place": (
        lambda h: torch.zeros_like(h).index_add(0, _shift(h), h[_shift(h)] * 2) + h, None),
}


def _shift(h):
    return torch.arange(h.shape[0]).roll(1)


@pytest.mark.parametrize("case", list(_MIXING))
def test_ops_that_mix_the_samples_couple_what_is_upstream(case):
    """An op on activations that lets one sample's output depend on others couples every parameter upstream
    of it (said, never measured: per-sample gradients are not defined there), as a train-mode batch norm does;
    the parameters downstream stay exact with the mixing held fixed."""
    f, why = _MIXING[case]

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2 = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.l2(f(self.l1(x).tanh()))

    torch.manual_seed(0)
    model = M().double()
    eng = PerSampleSqNorms(model).attach()
    model(torch.randn(B, 3, dtype=torch.float64)).pow(2).sum().backward()
    eng.detach()
    if why is None:
        assert eng.covered_last == {"l1.weight", "l1.bias", "l2.weight", "l2.bias"} and not eng.coupled
    else:
        assert eng.covered_last == {"l2.weight", "l2.bias"} and eng.coupled == {"l1.weight", "l1.bias"}
        assert eng.reasons["l1.weight"].startswith("coupled: ") and why in eng.reasons["l1.weight"]


def test_rows_permuted_inside_the_forward():
    """A permutation of the samples inside the forward (``h[perm]``): every per-sample entry is that of one input
    sample, against per-sample autograd (row ``j`` of the output is input sample ``perm[j]``); a layer applied to
    the rows in both orders is not covered (its per-sample pieces would add different samples' rows)."""
    perm = torch.tensor([2, 0, 3, 1, 5, 4])

    class M(nn.Module):
        def __init__(self, both=False):
            super().__init__()
            self.l1, self.l2, self.both = nn.Linear(3, 4), nn.Linear(4, 2), both

        def forward(self, x):
            h = self.l1(x).tanh()
            return (self.l2(h), self.l2(h[perm])) if self.both else self.l2(h[perm])

    torch.manual_seed(0)
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randint(0, 2, (6,))
    model = M().double()
    eng, got, ref = measure(model, x, lambda o: F.cross_entropy(o, y, reduction="none"))
    assert eng.covered_last == {"l1.weight", "l1.bias", "l2.weight", "l2.bias"} and not eng.coupled
    torch.testing.assert_close(got[perm], ref, rtol=1e-10, atol=0)

    both = M(both=True).double()
    eng = PerSampleSqNorms(both).attach()
    o1, o2 = both(x)
    (o1.pow(2).sum() + o2.pow(2).sum()).backward()  # two losses, summed as scalars: no op meets the two orders
    eng.detach()
    assert eng.covered_last == {"l1.weight", "l1.bias"}
    assert "different orders" in eng.reasons["l2.weight"]


_AUX = {
    # the importance (CV^2) load-balancing loss: a nonlinear function of a per-expert sum over the batch
    "importance variance": (lambda g: g.sum(0).var() / g.sum(0).mean() ** 2, True),
    "squared norm of the batch-mean gate": (lambda g: g.mean(0).pow(2).sum(), True),
    # Switch-style: fractions routed (no gradient) times the mean gate, linear in the statistic
    "switch f * P": (lambda g: 4 * (torch.bincount(g.argmax(1), minlength=4).to(g.dtype) / g.shape[0] * g.mean(0)).sum(),
                     False),
    # a function of a whole-batch scalar rescales every sample alike (as clipping does)
    "log of the batch-mean gate": (lambda g: g.mean().log(), False),
}


@pytest.mark.parametrize("case", list(_AUX))
def test_a_nonlinear_function_of_a_batch_statistic_couples_what_is_upstream(case):
    """A soft mixture of experts whose auxiliary loss is computed in the forward from statistics over the batch
    and added to the loss without meeting the batch again: a nonlinear function of a per-expert statistic couples
    the router (its per-sample pieces would miss the statistic's own fluctuation); a linear one, or a function of
    a whole-batch scalar, does not."""
    aux_of, coupled = _AUX[case]

    class SoftMoE(nn.Module):
        def __init__(self):
            super().__init__()
            self.router = nn.Linear(3, 4)
            self.experts = nn.ModuleList(nn.Linear(3, 2) for _ in range(4))

        def forward(self, x):
            g = self.router(x).softmax(-1)
            self.aux = aux_of(g)
            return sum(g[:, e:e + 1] * self.experts[e](x) for e in range(4))

    torch.manual_seed(0)
    model = SoftMoE().double()
    eng = PerSampleSqNorms(model).attach()
    out = model(torch.randn(B, 3, dtype=torch.float64))
    (out.pow(2).sum() + 0.3 * model.aux).backward()
    eng.detach()
    experts = {f"experts.{e}.{k}" for e in range(4) for k in ("weight", "bias")}
    if coupled:
        assert eng.coupled == {"router.weight", "router.bias"} and eng.covered_last == experts
        assert "statistic over the batch" in eng.reasons["router.weight"]
    else:
        assert not eng.coupled and eng.covered_last == experts | {"router.weight", "router.bias"}


_LOSS_OUTSIDE = {
    # the loss computed from the model's outputs in the training loop, not in the forward
    "InfoNCE logits e @ e.T": (lambda e, y: F.cross_entropy(e @ e.roll(1, 0).T / 0.5, torch.arange(e.shape[0])), True),
    "batch-hard triplet through cdist": (lambda e, y: (torch.cdist(e, e) * (y[:, None] == y[None])).amax(1).mean(),
                                         True),
    "centred against the batch mean": (lambda e, y: (e - e.mean(0)).pow(2).sum(1).mean(), True),
    "a (B, 1) output minus (B,) targets (broadcast to B x B)": (lambda e, y: (e[:, :1] - y.to(e.dtype)).pow(2).mean(),
                                                               True),
    "cross-entropy per sample": (lambda e, y: F.cross_entropy(e[:, :3], y), False),
    "mean squared error per sample, then log": (lambda e, y: (e[:, 0] - y.to(e.dtype)).pow(2).mean().log(), False),
}


@pytest.mark.parametrize("case", list(_LOSS_OUTSIDE))
def test_a_loss_that_mixes_the_samples_outside_the_forward_couples_the_model(case):
    """The watch goes on after the forward until the backward pass starts: a loss that pairs the samples or
    recombines a batch statistic in the training loop (SimCLR, triplet, centring) couples every parameter
    upstream (it used to be reported covered: tr_sigma 27x on a triplet loss); a per-sample loss stays exact.
    The function mode leaves the stack once the step is over."""
    loss_of, coupled = _LOSS_OUTSIDE[case]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()
    eng = PerSampleSqNorms(model).attach()
    x, y = torch.randn(B, 3, dtype=torch.float64), torch.arange(B) % 3
    loss_of(model(x), y).backward()
    covered = set(eng.covered_last)
    assert torch.overrides._get_current_function_mode_stack()  # inert until a safe point
    eng.reset()
    assert not torch.overrides._get_current_function_mode_stack()
    eng.detach()
    names = {"0.weight", "0.bias", "2.weight", "2.bias"}
    if coupled:
        assert eng.coupled == names and covered == set()
        assert eng.reasons["0.weight"].startswith("coupled: ")
    else:
        assert not eng.coupled and covered == names


def test_the_loss_side_watch_never_unbalances_the_function_mode_stack():
    """A forward inside ``with torch.device(...)`` (a function mode that closes before the backward pass): no
    watch after the forward (taking the engine's mode off later would take the device mode off instead); a
    forward without a backward, then another: the mode of the first leaves first; after the backward pass the
    optimizer's ops pass through untouched."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    eng = PerSampleSqNorms(model).attach()
    x = torch.randn(B, 3, dtype=torch.float64)
    with torch.device("cpu"):
        out = model(x)
    assert not torch.overrides._get_current_function_mode_stack()
    (out @ out.T).sum().backward()  # not seen: said in the docs
    eng.reset()
    model(x)  # no backward
    depth = len(torch.overrides._get_current_function_mode_stack())
    out = model(x)
    assert len(torch.overrides._get_current_function_mode_stack()) == depth == 1
    out.pow(2).sum().backward()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.step()
    assert eng.covered_last == {"weight", "bias"} and not eng.coupled
    eng.reset()
    assert not torch.overrides._get_current_function_mode_stack()
    eng.detach()


def test_clip_style_contrastive_model_is_coupled_not_measured():
    """A CLIP-style model: two encoders and the in-batch logits ``scale * a @ b.T`` inside the forward. Every
    sample's loss depends on every other: nothing is reported as per-sample (it used to be, with coverage 1)."""
    class Clip(nn.Module):
        def __init__(self):
            super().__init__()
            self.fi, self.ft = nn.Linear(5, 6), nn.Linear(4, 6)
            self.logit_scale = nn.Parameter(torch.tensor(1.0))

        def forward(self, xi, xt):
            a, b = F.normalize(self.fi(xi), dim=-1), F.normalize(self.ft(xt), dim=-1)
            return self.logit_scale.exp() * a @ b.T

    torch.manual_seed(0)
    model = Clip().double()
    eng = PerSampleSqNorms(model).attach()
    logits = model(torch.randn(B, 5, dtype=torch.float64), torch.randn(B, 4, dtype=torch.float64))
    t = torch.arange(B)
    (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)).backward()
    eng.detach()
    assert eng.covered_last == set()
    assert eng.coupled == {"fi.weight", "fi.bias", "ft.weight", "ft.bias", "logit_scale"}


@pytest.mark.parametrize("where", ["model input", "inside the model"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_packed_sequences(where, kind):
    """``pack_padded_sequence(..., enforce_sorted=False)`` as the model's input or inside its forward, then
    ``pad_packed_sequence`` and ``h_n``: every parameter exact, each per-sample entry that of its own sample
    (the packed order, sorted by length, is followed and undone), against per-sample autograd."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            cls = nn.LSTM if kind == "lstm" else nn.GRU
            self.rnn, self.fc = cls(3, 4, num_layers=2, bidirectional=True, batch_first=True), nn.Linear(16, 2)

        def forward(self, x, lengths=None):
            p = x if lengths is None else pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, st = self.rnn(p)
            hn = st[0] if kind == "lstm" else st
            o, lens = pad_packed_sequence(out, batch_first=True)
            return self.fc(torch.cat([hn[-2], hn[-1], o.sum(1) / lens[:, None].to(o.dtype)], -1))

    torch.manual_seed(0)
    model = M().double()
    lengths = torch.tensor([2, 5, 1, 4, 5, 3])
    x, y = torch.randn(6, 5, 3, dtype=torch.float64), torch.randint(0, 2, (6,))
    args = (pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False),) if where == "model input" \
        else (x, lengths)
    eng = PerSampleSqNorms(model).attach()
    F.cross_entropy(model(*args), y).backward()
    eng.detach()
    names = [n for n, _ in model.named_parameters()]
    assert eng.covered_last == set(names), eng.reasons
    got = eng.passes[-1] * 36
    losses = F.cross_entropy(model(*args), y, reduction="none")
    ref = torch.stack([sum((g ** 2).sum() for g in torch.autograd.grad(losses[i], list(model.parameters()),
                                                                        retain_graph=True)) for i in range(6)])
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=0)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_bias_table_over_windows_of_each_sample(attention):
    """Swin-style window attention: the samples' windows merged into the batch axis ``(B * nW, heads, N, N)`` and a
    learned relative-position bias (no batch axis) added to the scores, through SDPA's ``attn_mask`` or in eager
    code. Until 2026-12-01 the bias was not covered ("merged batch axis")."""

    class Windows(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.out = nn.Linear(4, 12), nn.Linear(8 * 4, 3)
            self.bias = nn.Parameter(0.1 * torch.randn(2, 4, 4))

        def forward(self, x):                      # x: (B, 2 windows, 4 tokens, 4)
            b = x.shape[0]
            q, k, v = self.qkv(x.reshape(b * 2, 4, 4)).view(b * 2, 4, 3, 2, 2).permute(2, 0, 3, 1, 4)
            if attention == "sdpa":
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
            else:
                o = ((q @ k.transpose(-1, -2)) * 0.5 ** 0.5 + self.bias.unsqueeze(0)).softmax(-1) @ v
            return self.out(o.transpose(1, 2).reshape(b, -1))

    torch.manual_seed(0)
    model = Windows().double()
    eng, got, ref = measure(model, torch.randn(B, 2, 4, 4, dtype=torch.float64), ce(torch.randint(0, 3, (B,))))
    assert eng.covered_last == {"qkv.weight", "qkv.bias", "out.weight", "out.bias", "bias"}, eng.reasons
    assert torch.allclose(got, ref, rtol=1e-9)


def test_weight_norm_parametrization_is_exact_and_quiet():
    """``weight_norm``'s backward has no vmap batching rule: the per-sample VJP runs vmap's fallback (a loop, the same
    numbers). Its "performance drop" warning is vmap's business, not the user's: none reaches the training loop."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(5, 7)), nn.Tanh(), nn.Linear(7, 3)).double()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eng, got, ref = measure(model, torch.randn(B, 5, dtype=torch.float64), ce(torch.randint(0, 3, (B,))))
    assert eng.covered_last == {n for n, _ in model.named_parameters()}, eng.reasons
    assert torch.allclose(got, ref, rtol=1e-9)


@pytest.mark.parametrize("kind", ["mul_", "imul", "div_", "idiv", "addcmul_", "lerp_", "twice"])
def test_in_place_ops_with_parameters(kind):
    """An in-place op that combines the data with a parameter overwrites the factor of that parameter's per-sample
    gradient (``h.mul_(s)``: ``ds_i = h_i * g_i`` with the ``h`` from before the op). Until 2026-12-01 the engine read
    ``h`` after the op: silently off by the change (float32 with ``s`` near 1), or left out by the sum check."""

    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c = nn.Linear(5, 8), nn.Linear(8, 3)
            self.s, self.t = nn.Parameter(torch.rand(8) + 0.5), nn.Parameter(torch.randn(8))

        def forward(self, x):
            h = self.a(x)
            if kind == "mul_":
                h.mul_(self.s)
                h.add_(self.t)
            elif kind == "imul":
                h *= self.s
                h += self.t
            elif kind == "div_":
                h.div_(self.s)
                h.add_(self.t)
            elif kind == "idiv":
                h /= self.s
            elif kind == "addcmul_":
                h.addcmul_(self.s, self.t)
            elif kind == "lerp_":
                h.lerp_(self.t, 0.3)
            else:
                h.mul_(self.s)
                h.mul_(self.s)
            return self.c(h.tanh())

    torch.manual_seed(0)
    model = InPlace().double()
    eng, got, ref = measure(model, torch.randn(B, 5, dtype=torch.float64), ce(torch.randint(0, 3, (B,))))
    used = {"a.weight", "a.bias", "c.weight", "c.bias", "s", "t"} - ({"t"} if kind in ("idiv", "twice") else
                                                                    {"s"} if kind == "lerp_" else set())
    assert eng.covered_last >= used, eng.reasons
    assert torch.allclose(got, ref, rtol=1e-9)
