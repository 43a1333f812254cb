"""Losses on hand-computed cases, no recompilation, tiny end-to-end training."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

from rnnrec_jax import losses, models, sampling, sparse_optim
from rnnrec_jax.config import ModelConfig, TrainConfig
from rnnrec_jax.evaluate import make_eval_chunk
from rnnrec_jax.train import (
    StepBatch,
    build_vocabulary,
    encode_events,
    init_train_state,
    item_counts,
    make_train_chunk,
    plan_batches,
    train_and_evaluate,
)

pytestmark = pytest.mark.unit


def test_sampled_cross_entropy_hand_computed():
    scores = jnp.array([[2.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    cols = jnp.array([5, 6, 7])
    got = losses.sampled_cross_entropy(scores, cols, jnp.ones(2))
    lse0 = np.log(np.exp(2) + 1 + np.exp(1))
    lse1 = np.log(np.e + np.e + 1)
    assert float(got) == pytest.approx((lse0 - 2) + (lse1 - 1), rel=1e-6)
    # Padding column (item 0) drops out; a zero-weight row adds nothing.
    got = losses.sampled_cross_entropy(scores, jnp.array([5, 6, 0]), jnp.array([1.0, 0.0]))
    assert float(got) == pytest.approx(np.log(np.exp(2) + 1) - 2, rel=1e-6)


def test_logq_correction_targets_and_samples():
    counts = jnp.array([0.0, 4.0, 9.0, 16.0])
    corr = losses.logq_correction(counts, jnp.array([1, 2, 3]), 2, 0.5, 1.0)
    np.testing.assert_allclose(corr, [np.log(4), np.log(9), 0.5 * np.log(16)], rtol=1e-6)


def test_bpr_max_hand_computed():
    scores = jnp.array([[1.0, 0.0, 2.0]])
    cols = jnp.array([1, 2, 3])
    got = losses.bpr_max(scores, cols, jnp.ones(1), bpreg=0.5)
    s = np.exp([0.0, 2.0]) / np.exp([0.0, 2.0]).sum()
    sig = 1 / (1 + np.exp(-(1.0 - np.array([0.0, 2.0]))))
    expect = -np.log((s * sig).sum()) + 0.5 * (s * np.array([0.0, 4.0])).sum()
    assert float(got) == pytest.approx(expect, rel=1e-6)


def test_full_cross_entropy_and_purchase_bce():
    scores = jnp.array([[0.0, 1.0, models.MASKED_SCORE]])
    got = losses.full_cross_entropy(scores, jnp.array([1]), jnp.ones(1))
    assert float(got) == pytest.approx(np.log(1 + np.e) - 1, rel=1e-6)
    bce = losses.purchase_bce(jnp.array([0.0, 2.0]), jnp.array([1.0, 0.0]), jnp.ones(2))
    assert float(bce) == pytest.approx(np.log(2) + np.log(1 + np.exp(2)), rel=1e-6)


def _synthetic(n_items=30, n_sessions=400, seed=0):
    """Sessions following a fixed successor (i -> perm[i]) 80% of the time."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_items)
    rows, t = [], 0.0
    for s in range(n_sessions):
        item = int(rng.integers(n_items))
        for _ in range(int(rng.integers(2, 7))):
            rows.append((f"s{s}", f"i{item}", t))
            t += 1.0
            item = int(perm[item]) if rng.random() < 0.8 else int(rng.integers(n_items))
    return pd.DataFrame(rows, columns=["SessionId", "ItemId", "Time"])


@pytest.mark.parametrize("n_sample", [-1, 8])
def test_train_step_does_not_recompile(n_sample):
    df = _synthetic(n_sessions=60)
    vocab = build_vocabulary(df)
    mc = ModelConfig(item_capacity=40, hidden_sizes=(8,), n_items=len(vocab), purchase_head=True)
    tc = TrainConfig(
        batch_size=4,
        n_sample=n_sample,
        steps_per_call=8,
        optimiser="adagrad" if n_sample > 0 else "adam",
        learning_rate=0.01,
    )
    enc = encode_events(df, vocab)
    state, opts = init_train_state(mc, tc)
    chunk = make_train_chunk(mc, tc, opts, item_counts(enc, 40), len(vocab))
    plan = sampling.session_parallel_plan(enc.offsets, tc.batch_size)
    negs = np.ones((8, max(n_sample, 0)), np.int32)
    for start in (0, 8, 16, plan.n_steps - 3):  # the last chunk is padded
        state, _ = chunk(state, plan_batches(plan, enc, 0.0, start, 8, negs))
    assert chunk._cache_size() == 1
    ev = make_eval_chunk(mc, len(vocab))
    carry = models.initial_carry(mc, 5)
    z = np.zeros((4, 5), np.int32)
    for _ in range(3):
        carry, _ = ev(state.params, carry, z + 1, z + 2, z.astype(bool), z.astype(np.float32))
    assert ev._cache_size() == 1


def test_padding_steps_leave_params_unchanged():
    df = _synthetic(n_sessions=10)
    vocab = build_vocabulary(df)
    mc = ModelConfig(item_capacity=40, hidden_sizes=(8,), n_items=len(vocab))
    tc = TrainConfig(batch_size=2, n_sample=4, steps_per_call=4, momentum=0.5)
    enc = encode_events(df, vocab)
    state, opts = init_train_state(mc, tc)
    chunk = make_train_chunk(mc, tc, opts, item_counts(enc, 40), len(vocab))
    plan = sampling.session_parallel_plan(enc.offsets, 2)
    before = jax.tree_util.tree_map(np.asarray, state.params)
    state, _ = chunk(
        state, plan_batches(plan, enc, 0.0, plan.n_steps + 10, 4, np.ones((4, 4), np.int32))
    )
    after = jax.tree_util.tree_map(np.asarray, state.params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, before, after)


def test_training_reset_matters():
    """The first step of a new session in a slot sees a zero state, not the old one."""
    df = _synthetic(n_sessions=6)
    vocab = build_vocabulary(df)
    mc = ModelConfig(item_capacity=40, hidden_sizes=(8,), n_items=len(vocab))
    tc = TrainConfig(
        batch_size=1, n_sample=-1, optimiser="adam", learning_rate=0.0, steps_per_call=64
    )
    enc = encode_events(df, vocab)
    state, opts = init_train_state(mc, tc)
    # Copy: the chunk donates (deletes) the state's buffers.
    params = jax.tree_util.tree_map(lambda x: jnp.array(np.asarray(x)), state.params)
    chunk = make_train_chunk(mc, tc, opts, item_counts(enc, 40), len(vocab))
    plan = sampling.session_parallel_plan(enc.offsets, 1)
    batch = plan_batches(plan, enc, 0.0, 0, 64, np.zeros((64, 0), np.int32))
    _, step_loss = chunk(state, batch)
    # Recompute each step's loss by hand, zeroing the state at session starts.
    valid = models.valid_item_mask(40, len(vocab))
    carry = models.initial_carry(mc, 1)
    for t in range(plan.n_steps):
        if batch.reset[t, 0]:
            carry = models.initial_carry(mc, 1)
        carry, rep, _ = models.encode_step(mc, params, carry, jnp.asarray(batch.inputs[t]))
        s = models.score_items(params, rep, valid)
        expect = losses.full_cross_entropy(s, jnp.asarray(batch.targets[t]), jnp.ones(1))
        assert float(step_loss[t]) == pytest.approx(float(expect), rel=1e-4)


@pytest.mark.parametrize("n_sample", [-1, 16])
def test_tiny_training_beats_popularity(n_sample):
    train = _synthetic(n_sessions=500, seed=0)
    test = _synthetic(n_sessions=100, seed=0).assign(SessionId=lambda d: "t" + d.SessionId)
    mc = ModelConfig(item_capacity=40, hidden_sizes=(32,))
    tc = TrainConfig(
        batch_size=16,
        n_sample=n_sample,
        epochs=6,
        sample_alpha=0.5,
        optimiser="adam" if n_sample < 0 else "adagrad",
        learning_rate=0.01 if n_sample < 0 else 0.1,
        momentum=0.1,
        steps_per_call=32,
        eval_batch_size=64,
    )
    res = train_and_evaluate(mc, tc, train, test, progress=False, log=None)
    # Popularity ranks the same list for everyone: ~ 5/30 recall@5 at best here.
    assert res.valid_report["recall@5"] > 0.6
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_reproducible_with_seed():
    train = _synthetic(n_sessions=80)
    mc = ModelConfig(item_capacity=40, hidden_sizes=(8,), dropout_hidden=0.2)
    tc = TrainConfig(batch_size=8, n_sample=8, epochs=1, steps_per_call=16, seed=3)
    a = train_and_evaluate(mc, tc, train, progress=False, log=None)
    b = train_and_evaluate(mc, tc, train, progress=False, log=None)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a.params, b.params)
    assert dataclasses.asdict(a.model_cfg)["n_items"] == 30


def _reference_sampled_steps(mc, tc, params, batch, counts):
    """Two sampled steps the plain way: autodiff w.r.t. whole tables, then
    GRU4Rec's Adagrad with lazy momentum on the touched rows (NumPy)."""
    lr, mom, eps, bsz = tc.learning_rate, tc.momentum, 1e-6, tc.batch_size
    dense_opt = sparse_optim.adagrad_momentum(lr, mom)
    enc_state = dense_opt.init(params["encoder"])
    p = {k: np.asarray(v, np.float64) for k, v in params.items() if k != "encoder"}
    acc = {k: np.zeros_like(v) for k, v in p.items()}
    mo = {k: np.zeros_like(v) for k, v in p.items()}
    enc = params["encoder"]
    carry = models.initial_carry(mc, bsz)
    for t in range(batch.inputs.shape[0]):
        b = jax.tree_util.tree_map(lambda x, t=t: jnp.asarray(x[t]), batch)
        carry = models.reset_carry(carry, b.reset)
        cols = jnp.concatenate([b.targets, b.negatives])
        corr = losses.logq_correction(jnp.asarray(counts), cols, bsz, tc.sample_alpha, tc.logq)

        def loss_fn(full, carry=carry, b=b, cols=cols, corr=corr):
            new_carry, rep, _ = models.encode_step(mc, full, carry, b.inputs, b.times)
            scores = rep @ full["item_out"][cols].T + full["item_bias"][cols][None, :]
            return losses.sampled_cross_entropy(scores, cols, b.weight, corr) / bsz, new_carry

        full = {"encoder": enc, **{k: jnp.asarray(v, jnp.float32) for k, v in p.items()}}
        grads, carry = jax.grad(loss_fn, has_aux=True)(full)
        upd, enc_state = dense_opt.update(grads["encoder"], enc_state)
        enc = optax.apply_updates(enc, upd)
        touched = {
            "item_out": np.unique(np.concatenate([np.asarray(cols), np.asarray(b.inputs)])),
            "item_bias": np.unique(np.asarray(cols)),
        }
        for name, rows in touched.items():
            g = np.asarray(grads[name], np.float64)[rows]
            acc[name][rows] += g**2
            mo[name][rows] = mom * mo[name][rows] - lr * g / np.sqrt(acc[name][rows] + eps)
            p[name][rows] += mo[name][rows]
    return {"encoder": enc, **p}


def test_sampled_step_matches_whole_table_reference():
    """Repeated columns (a negative equal to a target or input, drawn twice) are
    coalesced by routing score columns to their first occurrence; the result must
    equal autodiff w.r.t. the whole tables plus row-wise Adagrad on touched rows."""
    mc = ModelConfig(item_capacity=16, hidden_sizes=(6,), n_items=12)
    tc = TrainConfig(batch_size=4, n_sample=6, steps_per_call=2, learning_rate=0.3, momentum=0.5)
    counts = np.arange(16, dtype=np.float32) + 1.0
    counts[0] = 0.0
    batch = StepBatch(
        inputs=np.array([[3, 5, 3, 0], [4, 6, 9, 1]], np.int32),
        targets=np.array([[4, 6, 9, 0], [2, 7, 9, 11]], np.int32),
        reset=np.array([[True, True, True, False], [False, False, False, True]]),
        weight=np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.float32),
        times=np.zeros((2, 4), np.float32),
        buy_label=np.zeros((2, 4), np.float32),
        buy_weight=np.zeros((2, 4), np.float32),
        negatives=np.array([[7, 7, 4, 3, 12, 7], [2, 2, 8, 1, 6, 10]], np.int32),
    )
    state, opts = init_train_state(mc, tc)
    params0 = jax.tree_util.tree_map(lambda x: jnp.array(np.asarray(x)), state.params)
    chunk = make_train_chunk(mc, tc, opts, counts, 12)
    state, _ = chunk(state, batch)
    ref = _reference_sampled_steps(mc, tc, params0, batch, counts)
    got = jax.tree_util.tree_map(np.asarray, state.params)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6), got, ref
    )


@pytest.mark.parametrize("n_sample", [-1, 8])
def test_param_ema_follows_the_raw_params_step_by_step(n_sample):
    """Steps run one per call give the raw trajectory; the average of a fused chunk
    must equal the recurrence over it, and training itself must not change."""
    df = _synthetic(n_sessions=40)
    vocab = build_vocabulary(df)
    mc = ModelConfig(item_capacity=40, hidden_sizes=(8,), n_items=len(vocab), purchase_head=True)
    base = TrainConfig(
        batch_size=4, n_sample=n_sample, steps_per_call=1, learning_rate=0.05, momentum=0.3
    )
    enc = encode_events(df, vocab)
    plan = sampling.session_parallel_plan(enc.offsets, base.batch_size)
    negs = np.ones((1, max(n_sample, 0)), np.int32)
    steps = 5

    def as_numpy(tree):
        return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), tree)

    state, opts = init_train_state(mc, base)
    assert state.ema is None
    chunk = make_train_chunk(mc, base, opts, item_counts(enc, 40), len(vocab))
    trajectory = []
    for s in range(steps):
        state, _ = chunk(state, plan_batches(plan, enc, 0.0, s, 1, negs))
        trajectory.append(as_numpy(state.params))

    tc = dataclasses.replace(base, steps_per_call=steps, param_ema=0.6)
    state, opts = init_train_state(mc, tc)
    expected = as_numpy(state.params)
    for params in trajectory:
        expected = jax.tree_util.tree_map(lambda e, p: 0.6 * e + 0.4 * p, expected, params)
    chunk = make_train_chunk(mc, tc, opts, item_counts(enc, 40), len(vocab))
    negs = np.ones((steps, max(n_sample, 0)), np.int32)
    state, _ = chunk(state, plan_batches(plan, enc, 0.0, 0, steps, negs))
    close = dict(rtol=1e-5, atol=1e-6)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, **close),
        as_numpy(state.params),
        trajectory[-1],
    )
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, **close), as_numpy(state.ema), expected
    )
    leaves = zip(
        jax.tree_util.tree_leaves(state.ema), jax.tree_util.tree_leaves(trajectory[-1]), strict=True
    )
    assert any(not np.allclose(e, p) for e, p in leaves)  # the average lags the params


def test_param_ema_is_what_training_returns():
    df = _synthetic(n_sessions=40)
    mc = ModelConfig(item_capacity=40, hidden_sizes=(8,))
    tc = TrainConfig(batch_size=4, n_sample=-1, optimiser="adam", learning_rate=0.05,
                     epochs=1, steps_per_call=4, param_ema=0.9)  # fmt: skip
    result = train_and_evaluate(mc, tc, df, df, progress=False, log=None)
    raw = train_and_evaluate(
        mc, dataclasses.replace(tc, param_ema=0.0), df, df, progress=False, log=None
    )
    # Same raw trajectory, different returned params; both evaluate to sane metrics.
    assert set(result.params) == set(raw.params)
    leaves = zip(
        jax.tree_util.tree_leaves(result.params), jax.tree_util.tree_leaves(raw.params), strict=True
    )
    assert any(not np.allclose(a, b) for a, b in leaves)
    assert 0.0 < result.valid_report["mrr@20"] <= 1.0
    with pytest.raises(ValueError, match="param_ema"):
        TrainConfig(param_ema=1.0)


def test_recency_pass_fine_tunes_on_the_last_sessions_only():
    df = _synthetic(n_sessions=120)  # one event a second
    mc = ModelConfig(item_capacity=40, hidden_sizes=(8,))
    tc = TrainConfig(batch_size=4, n_sample=-1, optimiser="adam", learning_rate=0.05,
                     epochs=1, steps_per_call=8)  # fmt: skip
    plain = train_and_evaluate(mc, tc, df, df, progress=False, log=None)
    window_s = 100.0
    recent = dataclasses.replace(tc, recency_days=window_s / 86400, recency_lr=0.05)
    tuned = train_and_evaluate(mc, recent, df, df, progress=False, log=None)
    # The same epochs, then one pass over the sessions starting in the last 100 s.
    assert tuned.history[0]["loss"] == plain.history[0]["loss"]
    record = tuned.history[-1]
    assert record["phase"] == "recency" and record["epoch"] == 2
    assert record["valid_mrr@20"] == tuned.valid_report["mrr@20"]
    starts = df.groupby("SessionId")["Time"].min()
    window = df[df["SessionId"].isin(starts[starts >= df["Time"].max() - window_s].index)]
    # Consecutive repeats are dropped, as the online fine-tune does.
    window = window[window["ItemId"] != window.groupby("SessionId")["ItemId"].shift()]
    assert 0 < record["events"] == len(window) < len(df)
    assert record["sessions"] == int((window.groupby("SessionId").size() >= 2).sum())
    leaves = zip(
        jax.tree_util.tree_leaves(tuned.params),
        jax.tree_util.tree_leaves(plain.params),
        strict=True,
    )
    assert any(not np.allclose(a, b) for a, b in leaves)
    # Off (the default) changes nothing; the window and rate must be sane.
    assert TrainConfig().recency_days == 0.0
    with pytest.raises(ValueError, match="recency"):
        TrainConfig(recency_days=-1.0)


def test_cosine_scores_with_sampled_negatives_are_refused() -> None:
    # The sampled step scores raw dot products, evaluation and serving cosines.
    from rnnrec_jax.configs.tiny import get_config
    from rnnrec_jax.data.synthetic import generate_sessions

    mc, tc = get_config()
    mc = dataclasses.replace(mc, score_norm=True)
    tc = dataclasses.replace(tc, n_sample=64)
    events, _ = generate_sessions(50, 20, seed=0)
    with pytest.raises(ValueError, match="full softmax"):
        train_and_evaluate(mc, tc, events, progress=False, log=None)
