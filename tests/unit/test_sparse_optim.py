"""Row-wise optimisers against dense references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnrec_jax.sparse_optim import (
    SparseRows,
    adagrad_momentum,
    apply_row_updates,
    coalesce,
    first_occurrence,
    row_adagrad,
    row_adam,
)

pytestmark = pytest.mark.unit


def _dense_adagrad_m(table, grads_seq, lr, mom, eps=1e-6):
    """GRU4Rec's IndexedAdagradM on touched rows, written densely in NumPy."""
    acc = np.zeros_like(table)
    m = np.zeros_like(table)
    p = table.copy()
    for idx, vals in grads_seq:
        g = np.zeros_like(table)
        np.add.at(g, idx, vals)
        touched = np.unique(idx)
        acc[touched] += g[touched] ** 2
        step = -lr * g[touched] / np.sqrt(acc[touched] + eps)
        m[touched] = mom * m[touched] + step
        p[touched] += m[touched]
    return p


def test_coalesce_sums_repeats_and_pads():
    rows = SparseRows(jnp.array([3, 1, 3, 9]), jnp.array([[1.0], [2.0], [4.0], [8.0]]))
    out = coalesce(rows, num_rows=5)  # index 9 is out of range: padding
    got = {int(i): float(v[0]) for i, v in zip(out.indices, out.values, strict=True) if i < 5}
    assert got == {1: 2.0, 3: 5.0}


def test_row_adagrad_matches_dense_reference_on_touched_rows():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(10, 3)).astype(np.float32)
    seq = [
        (np.array([1, 4, 4, 7]), rng.normal(size=(4, 3)).astype(np.float32)),
        (np.array([4, 2]), rng.normal(size=(2, 3)).astype(np.float32)),
        (np.array([7, 7, 1]), rng.normal(size=(3, 3)).astype(np.float32)),
    ]
    opt = row_adagrad(0.2, momentum=0.3)
    state = opt.init(jnp.asarray(table))
    p = jnp.asarray(table)
    update = jax.jit(opt.update)
    for idx, vals in seq:
        upd, state = update(SparseRows(jnp.asarray(idx), jnp.asarray(vals)), state, p)
        p = apply_row_updates(p, upd)
    ref = _dense_adagrad_m(table, seq, 0.2, 0.3)
    np.testing.assert_allclose(np.asarray(p), ref, rtol=1e-5, atol=1e-6)
    untouched = [0, 3, 5, 6, 8, 9]
    np.testing.assert_array_equal(np.asarray(p)[untouched], table[untouched])


def test_row_adagrad_on_1d_bias_table():
    opt = row_adagrad(0.1)
    b = jnp.zeros(5)
    st = opt.init(b)
    upd, st = opt.update(SparseRows(jnp.array([2, 2]), jnp.array([1.0, 1.0])), st, b)
    out = apply_row_updates(b, upd)
    np.testing.assert_allclose(out[2], -0.1 * 2.0 / np.sqrt(4.0 + 1e-6), rtol=1e-6)
    assert float(jnp.abs(out).sum() - jnp.abs(out[2])) == 0.0


def test_row_adam_equals_optax_adam_when_all_rows_touched():
    rng = np.random.default_rng(1)
    table = jnp.asarray(rng.normal(size=(4, 2)).astype(np.float32))
    dense = optax.adam(0.01)
    sparse = row_adam(0.01)
    ds, ss = dense.init(table), sparse.init(table)
    pd_, ps = table, table
    for _ in range(3):
        g = jnp.asarray(rng.normal(size=(4, 2)).astype(np.float32))
        u, ds = dense.update(g, ds, pd_)
        pd_ = optax.apply_updates(pd_, u)
        su, ss = sparse.update(SparseRows(jnp.arange(4), g), ss, ps)
        ps = apply_row_updates(ps, su)
    np.testing.assert_allclose(np.asarray(ps), np.asarray(pd_), rtol=1e-5, atol=1e-6)


def test_dense_adagrad_momentum_matches_row_version():
    table = jnp.ones((3, 2))
    g = jnp.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]])
    d = adagrad_momentum(0.2, 0.2)
    r = row_adagrad(0.2, 0.2)
    ds, rs = d.init(table), r.init(table)
    pd_, pr = table, table
    for _ in range(2):
        u, ds = d.update(g, ds)
        pd_ = optax.apply_updates(pd_, u)
        ru, rs = r.update(SparseRows(jnp.arange(3), g), rs)
        pr = apply_row_updates(pr, ru)
    np.testing.assert_allclose(np.asarray(pr), np.asarray(pd_), rtol=1e-6)


def test_first_occurrence_points_at_first_position():
    idx = jnp.array([4, 2, 4, 9, 2, 2, 0, 7])  # 9 and 7 are padding for 6 rows
    owner = np.asarray(first_occurrence(idx, num_rows=6))
    np.testing.assert_array_equal(owner, [0, 1, 0, 3, 1, 1, 6, 3])


def test_row_adagrad_unique_indices_matches_coalescing_path():
    rng = np.random.default_rng(2)
    table = jnp.asarray(rng.normal(size=(12, 3)).astype(np.float32))
    general = row_adagrad(0.1, momentum=0.4)
    fast = row_adagrad(0.1, momentum=0.4, unique_indices=True)
    sg, sf = general.init(table), fast.init(table)
    pg, pf = table, table
    for _ in range(3):
        idx = jnp.asarray(rng.integers(0, 12, size=9))
        vals = jnp.asarray(rng.normal(size=(9, 3)).astype(np.float32))
        ug, sg = general.update(SparseRows(idx, vals), sg)
        pg = apply_row_updates(pg, ug)
        uf, sf = fast.update(coalesce(SparseRows(idx, vals), 12), sf)
        pf = apply_row_updates(pf, uf)
    np.testing.assert_allclose(np.asarray(pf), np.asarray(pg), rtol=1e-6, atol=1e-7)


def test_row_adagrad_without_momentum_keeps_no_momentum_table():
    state = row_adagrad(0.1).init(jnp.ones((100, 8)))
    assert state.mom.shape == (0, 8)
    assert row_adagrad(0.1, momentum=0.2).init(jnp.ones((100, 8))).mom.shape == (100, 8)
