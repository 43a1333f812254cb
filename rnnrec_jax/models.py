"""GRU4Rec-style session encoder (Flax linen) and item scorer.

Parameters are a dict with the recurrent encoder's linen params under 'encoder' and
the item tables beside it, so a training step can gather and update only the rows it
touches (see `sparse_optim.py`):

* 'item_out' (capacity, output_dim): output item embeddings (GRU4Rec's Wy); also the
  input embedding when `embedding_mode='tied'`.
* 'item_bias' (capacity,): output item bias (GRU4Rec's By).
* 'item_in': (capacity, embedding_dim) for 'separate'; (capacity, 3*hidden) for
  'none', where it is the first GRU layer's input weight matrix applied to a one-hot
  input (a row gather).

The cell contract is `(carry, x) -> (carry, y)`: the carry holds the hidden state of
each layer (and the LSTM memory), a window of the session's past top-layer states
when attention is on, and a few running counters for the purchase head. Index 0 and
rows at or beyond the vocabulary size are invalid and masked at scoring time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rnnrec_jax.config import ModelConfig

Params = dict[str, Any]
Carry = dict[str, Any]

N_PURCHASE_FEATURES = 6
# Large negative instead of -inf keeps softmax gradients finite on masked rows.
MASKED_SCORE = -1e9


class StepInput(NamedTuple):
    """What the encoder reads at one event of a session.

    Attributes:
      embedding: (B, in_dim) input vector (a gathered embedding row; for
        embedding_mode='none' the first layer's already projected input).
      item: (B,) int32 item index (used by the purchase features).
      time: (B,) float32 event time in seconds (used by the purchase features).
      projected: optional (B, 3H) ``embedding @ W_x`` of a GRU's first layer, computed
        once for rows that share an input (the explanation replays); inference only.
    """

    embedding: jax.Array
    item: jax.Array
    time: jax.Array
    projected: jax.Array | None = None


def _gru4rec_uniform(dim0_scale: float = 1.0, dim1_scale: float = 1.0) -> Callable:
    """GRU4Rec's init: U(-s, s), s = sqrt(6 / (rows/dim0_scale + cols/dim1_scale))."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        sigma = np.sqrt(6.0 / (shape[0] / dim0_scale + shape[1] / dim1_scale))
        return jax.random.uniform(key, shape, dtype, -sigma, sigma)

    return init


class GRULayer(nn.Module):
    """One GRU layer, PyTorch gate layout, GRU4Rec initialisation.

    With `projected_input=True` the input is already x @ W_x (the 'none' embedding
    mode gathers that product as a table row), so the layer has no input matrix.
    """

    features: int
    projected_input: bool = False

    @nn.compact
    def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
        hdim = self.features
        if self.projected_input:
            gx = x + self.param("b_x", nn.initializers.zeros, (3 * hdim,))
        else:
            w_x = self.param("w_x", _gru4rec_uniform(dim1_scale=3), (x.shape[-1], 3 * hdim))
            gx = x @ w_x + self.param("b_x", nn.initializers.zeros, (3 * hdim,))
        w_h = self.param("w_h", _gru4rec_uniform(dim1_scale=3), (hdim, 3 * hdim))
        b_hn = self.param("b_hn", nn.initializers.zeros, (hdim,))
        gh = h @ w_h
        r = jax.nn.sigmoid(gx[:, :hdim] + gh[:, :hdim])
        z = jax.nn.sigmoid(gx[:, hdim : 2 * hdim] + gh[:, hdim : 2 * hdim])
        n = jnp.tanh(gx[:, 2 * hdim :] + r * (gh[:, 2 * hdim :] + b_hn))
        return (1.0 - z) * n + z * h


class LSTMLayer(nn.Module):
    """One LSTM layer (fused gates i, f, g, o); carry is (h, c)."""

    features: int

    @nn.compact
    def __call__(self, h: jax.Array, c: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        hdim = self.features
        w_x = self.param("w_x", _gru4rec_uniform(dim1_scale=4), (x.shape[-1], 4 * hdim))
        w_h = self.param("w_h", _gru4rec_uniform(dim1_scale=4), (hdim, 4 * hdim))
        # Forget-gate bias 1 so early training does not wipe the memory.
        bias_init = jnp.concatenate([jnp.zeros(hdim), jnp.ones(hdim), jnp.zeros(2 * hdim)]).astype(
            jnp.float32
        )
        b = self.param("b", lambda *_: bias_init)
        gates = x @ w_x + h @ w_h + b
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return h, c


class SessionEncoder(nn.Module):
    """Stacked recurrent encoder of one event: `(carry, StepInput) -> (carry, outputs)`.

    Outputs are `(representation, purchase_logit)`: the representation (B, output_dim)
    is scored against the item embeddings; the purchase logit (B,) is zeros when the
    purchase head is off.
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(
        self, carry: Carry, inp: StepInput, train: bool = False, part: str = "step"
    ) -> tuple[Carry, tuple[jax.Array, jax.Array]]:
        """One event; ``part`` runs all of it or one half (see `recurrent_step`).

        * ``"step"``: the whole step, ``(carry, (rep, purchase logit))``.
        * ``"recurrent"``: all but the readout, ``(carry, (input vector, purchase
          logit))``: the readout feeds nothing back into the carry.
        * ``"readout"``: the representation of an already updated carry, whose last
          event's input vector is ``inp.embedding``: ``(carry, (rep, zeros))``.
        """
        cfg = self.cfg
        zeros = jnp.zeros(inp.embedding.shape[0], jnp.float32)
        if part == "readout":
            return carry, (self._readout(carry, inp.embedding), zeros)
        x = inp.embedding
        if cfg.dropout_embedding > 0:
            x = nn.Dropout(cfg.dropout_embedding, deterministic=not train)(x)
        emb = x
        new_h, new_c = [], []
        for i, hdim in enumerate(cfg.hidden_sizes):
            if cfg.cell == "gru":
                proj = i == 0 and cfg.embedding_mode == "none"
                if i == 0 and inp.projected is not None and not train:
                    # The same layer (same params) given its input product.
                    h = GRULayer(hdim, projected_input=True, name="gru_0")(
                        carry["h"][0], inp.projected
                    )
                else:
                    h = GRULayer(hdim, projected_input=proj, name=f"gru_{i}")(carry["h"][i], x)
            else:
                h, c = LSTMLayer(hdim, name=f"lstm_{i}")(carry["h"][i], carry["c"][i], x)
                new_c.append(c)
            if cfg.dropout_hidden > 0:
                # As GRU4Rec: the dropped-out state is also the carried state.
                h = nn.Dropout(cfg.dropout_hidden, deterministic=not train)(h)
            new_h.append(h)
            x = h
        out = dict(carry)
        out["h"] = tuple(new_h)
        if cfg.cell == "lstm":
            out["c"] = tuple(new_c)
        out["count"] = carry["count"] + 1
        if cfg.attention:
            out["window"] = jnp.concatenate([carry["window"][:, 1:], x[:, None, :]], axis=1)
            if cfg.attention_mode == "residual" and cfg.readout_mean_item:
                out["emb_sum"] = carry["emb_sum"] + emb
        rep = emb if part == "recurrent" else self._readout(out, emb)
        if cfg.purchase_head:
            out, feats = _purchase_features(carry, out, inp)
            w_in = jnp.concatenate([x, feats], axis=-1)
            logit = nn.Dense(1, name="purchase")(w_in)[:, 0]
        else:
            logit = zeros.astype(x.dtype)
        return out, (rep, logit)

    def _readout(self, out: Carry, emb: jax.Array) -> jax.Array:
        """The representation of an updated carry whose last input vector was ``emb``."""
        cfg = self.cfg
        x = out["h"][-1]
        rep = x
        if cfg.attention:
            window, count = out["window"], out["count"]
            if cfg.attention_mode == "residual":
                extras = []
                if cfg.readout_last_item:
                    extras.append(emb)
                if cfg.readout_mean_item:
                    extras.append(out["emb_sum"] / count[:, None].astype(emb.dtype))
                rep = self._residual_readout(x, window, count, extras)
            else:
                rep = self._attend(x, window, count)
        if cfg.output_projection:
            rep = nn.Dense(
                cfg.output_dim, use_bias=False, kernel_init=_identity_init, name="out_proj"
            )(rep)
        if cfg.score_norm:
            log_scale = self.param(
                "score_log_scale",
                lambda *_: jnp.asarray(np.log(cfg.score_scale_init), jnp.float32),
            )
            rep = jnp.exp(log_scale) * _l2_normalize(rep)
        return rep

    def _attention_pool(self, h: jax.Array, window: jax.Array, count: jax.Array) -> jax.Array:
        """NARM's local encoder: sum_j a_j h_j, a = softmax(v . sig(A1 h_t + A2 h_j))."""
        hdim = h.shape[-1]
        win = window.shape[1]
        q = nn.Dense(hdim, use_bias=False, name="att_q")(h)
        k = nn.Dense(hdim, use_bias=False, name="att_k")(window)
        e = nn.Dense(1, use_bias=False, name="att_v")(jax.nn.sigmoid(q[:, None, :] + k))[..., 0]
        valid = jnp.arange(win)[None, :] >= (win - jnp.minimum(count, win))[:, None]
        e = jnp.where(valid, e, MASKED_SCORE)
        a = jax.nn.softmax(e, axis=-1)
        return jnp.einsum("bl,bld->bd", a, window)

    def _residual_readout(
        self, h: jax.Array, window: jax.Array, count: jax.Array, extras: list[jax.Array]
    ) -> jax.Array:
        """rep = h_t + W [pooled; extras], W = 0 at init: starts as the plain GRU readout."""
        pooled = self._attention_pool(h, window, count)
        feats = jnp.concatenate([pooled, *extras], axis=-1)
        delta = nn.Dense(
            self.cfg.output_dim, use_bias=False, kernel_init=nn.initializers.zeros, name="readout"
        )(feats)
        return h + delta

    def _attend(self, h: jax.Array, window: jax.Array, count: jax.Array) -> jax.Array:
        """NARM-style concat readout: rep = W [h_t ; pooled] (attention_mode='concat')."""
        pooled = self._attention_pool(h, window, count)
        return nn.Dense(self.cfg.output_dim, use_bias=False, name="att_out")(
            jnp.concatenate([h, pooled], axis=-1)
        )


def _identity_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    del key
    return jnp.eye(shape[0], shape[1], dtype=dtype)


def _l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


def _purchase_features(carry: Carry, out: Carry, inp: StepInput) -> tuple[Carry, jax.Array]:
    """Running session features for the purchase head (count, repeats, dwell)."""
    count = out["count"].astype(jnp.float32)
    first = carry["count"] == 0
    repeat = jnp.any(carry["recent_items"] == inp.item[:, None], axis=1) & ~first
    n_repeat = carry["n_repeat"] + repeat.astype(jnp.float32)
    gap = jnp.where(first, 0.0, jnp.clip(inp.time - carry["last_time"], 0.0, 3600.0))
    log_gap = jnp.log1p(gap)
    dwell_sum = carry["dwell_sum"] + log_gap
    out["recent_items"] = jnp.concatenate([carry["recent_items"][:, 1:], inp.item[:, None]], axis=1)
    out["n_repeat"] = n_repeat
    out["last_time"] = inp.time
    out["dwell_sum"] = dwell_sum
    n_gaps = jnp.maximum(count - 1.0, 1.0)
    feats = jnp.stack(
        [
            jnp.log1p(count),
            n_repeat / count,
            (count - n_repeat) / count,
            dwell_sum / n_gaps,
            log_gap,
            jnp.log1p(count - n_repeat),
        ],
        axis=-1,
    )
    return out, feats


def initial_carry(cfg: ModelConfig, batch_size: int) -> Carry:
    """Zero carry for `batch_size` fresh sessions.

    Args:
      cfg: model configuration.
      batch_size: number of parallel sessions.

    Returns:
      The carry pytree (dict of arrays).
    """
    carry: Carry = {
        "h": tuple(jnp.zeros((batch_size, h), jnp.float32) for h in cfg.hidden_sizes),
        "count": jnp.zeros((batch_size,), jnp.int32),
    }
    if cfg.cell == "lstm":
        carry["c"] = tuple(jnp.zeros((batch_size, h), jnp.float32) for h in cfg.hidden_sizes)
    if cfg.attention:
        carry["window"] = jnp.zeros(
            (batch_size, cfg.attention_window, cfg.hidden_sizes[-1]), jnp.float32
        )
    if cfg.attention and cfg.attention_mode == "residual" and cfg.readout_mean_item:
        carry["emb_sum"] = jnp.zeros((batch_size, input_dim(cfg)), jnp.float32)
    if cfg.purchase_head:
        carry["recent_items"] = jnp.zeros((batch_size, 16), jnp.int32)
        carry["n_repeat"] = jnp.zeros((batch_size,), jnp.float32)
        carry["last_time"] = jnp.zeros((batch_size,), jnp.float32)
        carry["dwell_sum"] = jnp.zeros((batch_size,), jnp.float32)
    return carry


def reset_carry(carry: Carry, reset: jax.Array) -> Carry:
    """Zeroes the carry of the slots where `reset` is true (a new session starts).

    Args:
      carry: batch carry.
      reset: (B,) bool.

    Returns:
      The carry with those slots zeroed; other slots unchanged.
    """

    def zero(x: jax.Array) -> jax.Array:
        m = reset.reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.where(m, jnp.zeros_like(x), x)

    return jax.tree_util.tree_map(zero, carry)


def input_dim(cfg: ModelConfig) -> int:
    """Width of the encoder's input vector for the configured embedding mode."""
    if cfg.embedding_mode == "tied":
        return cfg.output_dim
    if cfg.embedding_mode == "separate":
        return cfg.embedding_dim
    return 3 * cfg.hidden_sizes[0]


def init_params(cfg: ModelConfig, key: jax.Array) -> Params:
    """Initialises all parameters the way GRU4Rec does.

    Args:
      cfg: model configuration.
      key: PRNG key.

    Returns:
      Params dict: 'encoder' (linen params), 'item_out', 'item_bias', and 'item_in'
      unless embeddings are tied.
    """
    k_enc, k_out, k_in = jax.random.split(key, 3)
    # GRU4Rec scales by the number of items, not by the (larger) table capacity.
    n_rows = cfg.n_items + 1 if cfg.n_items > 0 else cfg.item_capacity
    cap = cfg.item_capacity

    def table(k: jax.Array, width: int, dim1_scale: float = 1.0) -> jax.Array:
        sigma = np.sqrt(6.0 / (n_rows + width / dim1_scale))
        return jax.random.uniform(k, (cap, width), jnp.float32, -sigma, sigma)

    params: Params = {
        "item_out": table(k_out, cfg.output_dim),
        "item_bias": jnp.zeros((cap,), jnp.float32),
    }
    if cfg.embedding_mode == "separate":
        params["item_in"] = table(k_in, cfg.embedding_dim)
    elif cfg.embedding_mode == "none":
        params["item_in"] = table(k_in, 3 * cfg.hidden_sizes[0], dim1_scale=3)
    dummy = StepInput(
        jnp.zeros((1, input_dim(cfg)), jnp.float32),
        jnp.zeros((1,), jnp.int32),
        jnp.zeros((1,), jnp.float32),
    )
    params["encoder"] = SessionEncoder(cfg).init(k_enc, initial_carry(cfg, 1), dummy)["params"]
    return params


def input_table_name(cfg: ModelConfig) -> str:
    """Name of the table the encoder's input rows are gathered from."""
    return "item_out" if cfg.embedding_mode == "tied" else "item_in"


def encode_step(
    cfg: ModelConfig,
    params: Params,
    carry: Carry,
    items: jax.Array,
    times: jax.Array | None = None,
    *,
    input_rows: jax.Array | None = None,
    train: bool = False,
    rng: jax.Array | None = None,
) -> tuple[Carry, jax.Array, jax.Array]:
    """Advances the sessions by one event.

    Args:
      cfg: model configuration.
      params: model params.
      carry: batch carry (already reset where a session starts).
      items: (B,) int32 item indices of the current events.
      times: (B,) float32 event times (only the purchase features use them).
      input_rows: pre-gathered input rows (B, in_dim); the training step passes them
        so gradients flow to the rows, not to the whole table.
      train: enables dropout (needs `rng`).
      rng: dropout PRNG key.

    Returns:
      (new carry, representation (B, output_dim), purchase logit (B,)).
    """
    carry, (rep, logit) = _apply_encoder(
        cfg, params, carry, items, times, input_rows=input_rows, train=train, rng=rng
    )
    return carry, rep, logit


def _apply_encoder(
    cfg: ModelConfig,
    params: Params,
    carry: Carry,
    items: jax.Array,
    times: jax.Array | None,
    *,
    input_rows: jax.Array | None = None,
    projected: jax.Array | None = None,
    train: bool = False,
    rng: jax.Array | None = None,
    part: str = "step",
) -> tuple[Carry, tuple[jax.Array, jax.Array]]:
    """`SessionEncoder` on one event per row (rows gathered and times zeroed if not given)."""
    if input_rows is None:
        input_rows = jnp.take(params[input_table_name(cfg)], items, axis=0)
    if times is None:
        times = jnp.zeros(items.shape, jnp.float32)
    rngs = {"dropout": rng} if (train and rng is not None) else None
    return SessionEncoder(cfg).apply(
        {"params": params["encoder"]},
        carry,
        StepInput(input_rows, items, times, projected),
        train=train,
        rngs=rngs,
        part=part,
    )


def recurrent_step(
    cfg: ModelConfig,
    params: Params,
    carry: Carry,
    items: jax.Array,
    times: jax.Array | None = None,
    *,
    input_rows: jax.Array | None = None,
    projected: jax.Array | None = None,
) -> tuple[Carry, jax.Array, jax.Array]:
    """An inference step without its readout: `encode_step` less the representation.

    The readout feeds nothing back into the carry, so a loop that needs the
    representations of many steps reads them out afterwards in one batch (`readout`)
    instead of once per step at a small batch.

    Args:
      cfg: model configuration.
      params: model params.
      carry: batch carry (already reset where a session starts).
      items: (B,) int32 item indices of the current events.
      times: (B,) float32 event times (only the purchase features use them).
      input_rows: pre-gathered input rows (B, in_dim).
      projected: a GRU's first-layer input product (`first_layer_input`), or None.

    Returns:
      (new carry, the events' input vectors (B, in_dim), which `readout` needs,
      purchase logit (B,)).
    """
    carry, (emb, logit) = _apply_encoder(
        cfg, params, carry, items, times, input_rows=input_rows, projected=projected,
        part="recurrent",
    )  # fmt: skip
    return carry, emb, logit


def first_layer_input(cfg: ModelConfig, params: Params, rows: jax.Array) -> jax.Array | None:
    """``rows @ W_x`` of a GRU's first layer (None for other cells and for the 'none'
    embedding mode, whose rows already are that product): rows that share an input can
    share this product (`recurrent_step`'s ``projected``)."""
    if cfg.cell != "gru" or cfg.embedding_mode == "none":
        return None
    return rows @ params["encoder"]["gru_0"]["w_x"]


# The carry entries `readout` reads (those a config has).
READOUT_KEYS = ("h", "window", "count", "emb_sum")


def readout_carry(carry: Carry) -> Carry:
    """The part of a carry that `readout` reads (for keeping it per event)."""
    return {key: carry[key] for key in READOUT_KEYS if key in carry}


def readout(cfg: ModelConfig, params: Params, carry: Carry, last_input: jax.Array) -> jax.Array:
    """The representation `encode_step` returns, from the carry it left.

    Args:
      cfg: model configuration.
      params: model params.
      carry: batch carry after at least one event (a fresh carry has no mean input),
        or its `readout_carry`.
      last_input: (B, in_dim) the input vector of the carry's last event
        (`recurrent_step`'s second output).

    Returns:
      (B, output_dim) representations.
    """
    n = last_input.shape[0]
    _, (rep, _) = SessionEncoder(cfg).apply(
        {"params": params["encoder"]},
        carry,
        StepInput(last_input, jnp.zeros(n, jnp.int32), jnp.zeros(n, jnp.float32)),
        part="readout",
    )
    return rep


def valid_item_mask(capacity: int, n_items: int | jax.Array) -> jax.Array:
    """(capacity,) bool: true for real items 1..n_items.

    Args:
      capacity: table rows.
      n_items: number of real items in the vocabulary.

    Returns:
      Boolean mask; index 0 (OOV/padding) and rows beyond the vocabulary are false.
    """
    idx = jnp.arange(capacity)
    return (idx >= 1) & (idx <= n_items)


def uses_score_norm(params: Params) -> bool:
    """True when the params belong to a model with cosine scores (`score_norm`)."""
    enc = params.get("encoder", {})
    return "score_log_scale" in enc


def score_items(
    params: Params,
    rep: jax.Array,
    valid: jax.Array | None = None,
    exclude: jax.Array | None = None,
) -> jax.Array:
    """Scores every item: rep @ item_out^T + item_bias, invalid rows masked.

    With cosine scores (`ModelConfig.score_norm`, detected from the params) the item
    rows are L2-normalised first; `rep` is already normalised and scaled.

    Args:
      params: model params.
      rep: (B, output_dim) session representations.
      valid: (capacity,) bool item mask, or None for no masking.
      exclude: (B,) item index per row that gets the masked score (the input item
        when `ModelConfig.exclude_input_item`), or None.

    Returns:
      (B, capacity) float32 scores; masked items get a large negative score.
    """
    table = params["item_out"]
    if uses_score_norm(params):
        # Cosine scores: the encoder already normalised and scaled `rep`.
        table = _l2_normalize(table)
    scores = rep @ table.T + params["item_bias"][None, :]
    if valid is not None:
        scores = jnp.where(valid[None, :], scores, MASKED_SCORE)
    if exclude is not None:
        hit = jnp.arange(scores.shape[-1])[None, :] == exclude[:, None]
        scores = jnp.where(hit, MASKED_SCORE, scores)
    return scores


def stack_params(param_sets: list[Params]) -> Params:
    """Stacks same-shaped param sets (e.g. seeds) on a new leading ensemble axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *param_sets)


def ensemble_initial_carry(cfg: ModelConfig, n_models: int, batch_size: int) -> Carry:
    """Zero carry for an ensemble: every leaf gets a leading (n_models,) axis."""
    one = initial_carry(cfg, batch_size)
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n_models, *x.shape)), one)


def ensemble_step_scores(
    cfg: ModelConfig,
    stacked: Params,
    carry: Carry,
    items: jax.Array,
    times: jax.Array | None = None,
    valid: jax.Array | None = None,
    exclude: jax.Array | None = None,
) -> tuple[Carry, jax.Array, jax.Array]:
    """One inference step of an ensemble of same-config models (stacked params).

    Scores are the log of the members' mean softmax probability over the valid
    items, so an ensemble is served like one model (rank, top-k on the scores).

    Returns:
      (new stacked carry, (B, capacity) scores, (B,) mean purchase logit).
    """

    def member(p: Params, c: Carry) -> tuple[Carry, jax.Array, jax.Array]:
        c, rep, logit = encode_step(cfg, p, c, items, times)
        return c, jax.nn.log_softmax(score_items(p, rep, valid), axis=-1), logit

    carry, logp, logit = jax.vmap(member)(stacked, carry)
    scores = jax.nn.logsumexp(logp, axis=0) - jnp.log(logp.shape[0])
    if valid is not None:
        scores = jnp.where(valid[None, :], scores, MASKED_SCORE)
    if exclude is not None:
        hit = jnp.arange(scores.shape[-1])[None, :] == exclude[:, None]
        scores = jnp.where(hit, MASKED_SCORE, scores)
    return carry, scores, logit.mean(axis=0)


class SessionRecModel:
    """Convenience bundle of a config with the functional model API."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg

    def init(self, key: jax.Array) -> Params:
        """GRU4Rec-style parameter init (see `init_params`)."""
        return init_params(self.cfg, key)

    def initial_carry(self, batch_size: int) -> Carry:
        """Zero carry (see `initial_carry`)."""
        return initial_carry(self.cfg, batch_size)

    def step(
        self, params: Params, carry: Carry, items: jax.Array, times: jax.Array | None = None
    ) -> tuple[Carry, jax.Array, jax.Array]:
        """Inference step: (carry, items) -> (carry, representation, purchase logit)."""
        return encode_step(self.cfg, params, carry, items, times)

    def score(self, params: Params, rep: jax.Array, n_items: int) -> jax.Array:
        """Scores all items with the validity mask for `n_items` real items."""
        return score_items(params, rep, valid_item_mask(self.cfg.item_capacity, n_items))
