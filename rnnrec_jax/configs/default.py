"""Best configuration found on train_tr -> train_valid (bench/experiments/trials.jsonl).

GRU4Rec-style GRU (128 units, tied input/output item embeddings, dropout 0.2 on the
embedding and 0.35 on the hidden state) trained with a FULL softmax cross-entropy
over the whole catalogue (~6,400 items; no sampling, no logQ), GRU4Rec's Adagrad with
momentum (lr 0.13, momentum 0.35), batch 176 session-parallel, 8 epochs (the best
valid MRR@20 epoch), plus a jointly trained purchase head (weight 0.1) over the state
and running session features (count, repeats, dwell), Platt-calibrated on train_valid.

Command (train on train_full, evaluate on test, 3 seeds):
    .venv/bin/python bench/experiments/final.py default --seeds 0 1 2

Expected: valid (train_tr -> train_valid) Recall@20 ~0.546 / MRR@20 ~0.224; test
numbers per seed are appended to bench/experiments/final.jsonl.
"""

from rnnrec_jax.config import ModelConfig, TrainConfig


def get_config() -> tuple[ModelConfig, TrainConfig]:
    """Returns (model config, train config)."""
    model = ModelConfig(
        item_capacity=6400,
        cell="gru",
        hidden_sizes=(128,),
        embedding_mode="tied",
        dropout_embedding=0.2,
        dropout_hidden=0.35,
        purchase_head=True,
        purchase_loss_weight=0.1,
    )
    train = TrainConfig(
        batch_size=176,
        n_sample=-1,
        loss="cross-entropy",
        optimiser="adagrad",
        learning_rate=0.13,
        momentum=0.35,
        epochs=8,
        steps_per_call=64,
    )
    return model, train
