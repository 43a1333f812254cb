"""Frozen configuration dataclasses for the session recommender and its training.

`ModelConfig` fixes the shapes and wiring of the network (what a checkpoint needs
to rebuild it); `TrainConfig` fixes how it is trained. Both round-trip through JSON
so they can live inside checkpoints and model manifests.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal, TypeVar

Cell = Literal["gru", "lstm"]
EmbeddingMode = Literal["none", "separate", "tied"]
Loss = Literal["cross-entropy", "bpr-max"]
Optimiser = Literal["adagrad", "adam", "adamw", "rmsprop"]
AttentionMode = Literal["concat", "residual"]

_C = TypeVar("_C", "ModelConfig", "TrainConfig")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and wiring of the session encoder and its item scorer.

    Attributes:
      item_capacity: rows of the item tables. Index 0 is OOV/padding; real items are
        1..n_items (< item_capacity); rows beyond the vocabulary are masked out.
      cell: recurrent cell, 'gru' (GRU4Rec) or 'lstm'.
      hidden_sizes: units per stacked recurrent layer.
      embedding_mode: 'none' (GRU4Rec's one-hot input: the first layer's input
        weight matrix is a row table), 'separate' (own input embedding table),
        'tied' (input embedding = output item embedding; GRU4Rec's constrained mode).
      embedding_dim: width of the separate input embedding (ignored otherwise).
      attention: NARM-style attention over the last `attention_window` hidden states
        of the session; the output is then a projection of [last state; pooled].
      attention_window: how many past states the carry keeps when attention is on.
      attention_mode: 'concat' (rep = W [h_t; pooled], the first version) or
        'residual' (NARM/STAMP-style readout that starts as the plain GRU readout:
        rep = h_t + W [pooled; extras] with W initialised to zero).
      readout_last_item: add the current (last) input embedding to the readout's
        extras (STAMP's x_t); needs attention_mode='residual'.
      readout_mean_item: add the mean input embedding of the session so far
        (STAMP's m_s) to the readout's extras; needs attention_mode='residual'.
      output_projection: learned square map of the representation into the item
        space (a bilinear decoder, NARM's B), initialised to the identity.
      score_norm: cosine scores: representation and item embeddings are L2
        normalised and multiplied by a learned scale (NISER / SR-GNN style);
        the item bias is still added. Only with the full-softmax loss.
      score_scale_init: initial value of that scale.
      exclude_input_item: at inference (evaluation, serving) the item just clicked
        gets the lowest score. The raw data has no consecutive repeats, but the
        split's item filter makes a few (A B A with B dropped: 52 of the 6,722 test
        targets), which then count as misses; on the default model the trade measured
        Recall@20 0.5610 / MRR@20 0.2370 with it, 0.5614 / 0.2363 without. Training
        is unchanged.
      dropout_embedding: dropout on the input embedding (training only).
      dropout_hidden: dropout on each layer's output (training only; as in GRU4Rec
        the dropped-out state is what is carried to the next step).
      purchase_head: add a purchase logit computed from the state and simple session
        features, trained jointly with a weighted binary cross-entropy.
      purchase_loss_weight: weight of the purchase loss in the total loss.
      n_items: number of real items when the model was built (informational; the
        validity mask is passed at scoring time so the vocabulary can grow).
    """

    item_capacity: int = 8192
    cell: Cell = "gru"
    hidden_sizes: tuple[int, ...] = (100,)
    embedding_mode: EmbeddingMode = "tied"
    embedding_dim: int = 0
    attention: bool = False
    attention_window: int = 16
    attention_mode: AttentionMode = "concat"
    readout_last_item: bool = False
    readout_mean_item: bool = False
    output_projection: bool = False
    score_norm: bool = False
    score_scale_init: float = 10.0
    exclude_input_item: bool = False
    dropout_embedding: float = 0.0
    dropout_hidden: float = 0.0
    purchase_head: bool = False
    purchase_loss_weight: float = 0.1
    n_items: int = 0

    def __post_init__(self) -> None:
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"unknown cell {self.cell!r}")
        if self.embedding_mode not in ("none", "separate", "tied"):
            raise ValueError(f"unknown embedding_mode {self.embedding_mode!r}")
        if not self.hidden_sizes or min(self.hidden_sizes) <= 0:
            raise ValueError("hidden_sizes must be a non-empty tuple of positive ints")
        if self.embedding_mode == "separate" and self.embedding_dim <= 0:
            raise ValueError("embedding_mode='separate' needs embedding_dim > 0")
        if self.embedding_mode == "none" and self.cell != "gru":
            raise ValueError("embedding_mode='none' is only defined for the GRU cell")
        if self.attention_mode not in ("concat", "residual"):
            raise ValueError(f"unknown attention_mode {self.attention_mode!r}")
        extras = self.readout_last_item or self.readout_mean_item
        if extras and not (self.attention and self.attention_mode == "residual"):
            raise ValueError("readout_last_item/readout_mean_item need the residual attention")
        if self.item_capacity < 2:
            raise ValueError("item_capacity must be >= 2 (index 0 is OOV/padding)")
        # JSON gives lists; keep the dataclass hashable.
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))

    @property
    def output_dim(self) -> int:
        """Width of the session representation scored against item embeddings."""
        return self.hidden_sizes[-1]

    def to_json(self) -> str:
        """Serialises to a JSON string."""
        return _to_json(self)

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> ModelConfig:
        """Builds from a JSON string or an already parsed dict."""
        return _from_json(cls, text)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How the model is trained (session-parallel mini-batches, GRU4Rec style).

    Attributes:
      batch_size: parallel session slots.
      n_sample: extra negatives per step drawn from popularity**sample_alpha, shared
        by the whole mini-batch (in-batch targets are negatives too). -1 means full
        softmax over the whole catalogue (no sampling, no logQ).
      sample_alpha: exponent on popularity for the sampler.
      sample_cache_steps: steps of negatives drawn at once (GRU4Rec draws in chunks).
      logq: strength of the logQ correction for cross-entropy (0 = off).
      loss: 'cross-entropy' or 'bpr-max'.
      bpreg: score regularisation of BPR-max.
      elu_param: ELU on scores before BPR-max (0 = off).
      optimiser: 'adagrad' (with momentum, as GRU4Rec), 'adam', 'adamw', 'rmsprop'.
      learning_rate, momentum, weight_decay, grad_clip (global norm, 0 = off).
      adam_b2: second-moment decay for Adam/AdamW.
      epochs: maximum epochs.
      patience: early stopping patience in epochs on valid MRR@20 (0 = off).
      seed: seed of init, dropout and sampling.
      steps_per_call: session-parallel steps fused into one compiled `lax.scan`.
      eval_batch_size: parallel sessions during evaluation.
      label_smoothing: label smoothing for full-softmax cross-entropy.
      param_ema: per-step decay of an exponential moving average of the params
        (0 = off). When on, the average is what is evaluated, early-stopped on and
        returned: the raw params only drive the optimiser.
      recency_days: after the epochs (and the early-stopping choice), one more pass
        over the sessions that start in the last ``recency_days`` of the training
        data, as the online trainer fine-tunes (SGD with momentum, fresh state;
        `rnnrec_jax.finetune.fine_tune`). 0 = off.
      recency_lr: learning rate of that pass.
    """

    batch_size: int = 32
    n_sample: int = 2048
    sample_alpha: float = 0.5
    sample_cache_steps: int = 4096
    logq: float = 1.0
    loss: Loss = "cross-entropy"
    bpreg: float = 1.0
    elu_param: float = 0.0
    optimiser: Optimiser = "adagrad"
    learning_rate: float = 0.2
    momentum: float = 0.2
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    adam_b2: float = 0.999
    epochs: int = 10
    patience: int = 0
    seed: int = 0
    steps_per_call: int = 256
    eval_batch_size: int = 512
    label_smoothing: float = 0.0
    param_ema: float = 0.0
    recency_days: float = 0.0
    recency_lr: float = 0.05

    def __post_init__(self) -> None:
        if self.loss not in ("cross-entropy", "bpr-max"):
            raise ValueError(f"unknown loss {self.loss!r}")
        if self.optimiser not in ("adagrad", "adam", "adamw", "rmsprop"):
            raise ValueError(f"unknown optimiser {self.optimiser!r}")
        if self.batch_size <= 0 or self.steps_per_call <= 0:
            raise ValueError("batch_size and steps_per_call must be positive")
        if self.n_sample < -1:
            raise ValueError("n_sample must be -1 (full softmax), 0 or positive")
        if not 0.0 <= self.param_ema < 1.0:
            raise ValueError("param_ema must be in [0, 1)")
        if self.recency_days < 0 or self.recency_lr < 0:
            raise ValueError("recency_days and recency_lr must be >= 0")

    @property
    def full_softmax(self) -> bool:
        """True when every step scores the whole catalogue instead of a sample."""
        return self.n_sample < 0

    def to_json(self) -> str:
        """Serialises to a JSON string."""
        return _to_json(self)

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> TrainConfig:
        """Builds from a JSON string or an already parsed dict."""
        return _from_json(cls, text)


def _to_json(cfg: ModelConfig | TrainConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


def _from_json(cls: type[_C], text: str | dict[str, Any]) -> _C:
    data = json.loads(text) if isinstance(text, str) else dict(text)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**data)
