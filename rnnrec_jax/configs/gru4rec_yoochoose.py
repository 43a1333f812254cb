"""Official GRU4Rec Yoochoose parameters (paramfiles/yoochoose_xe_shared_best.py).

480 GRU units, constrained (tied) embedding, batch 48, dropout 0.2 on the hidden
state, Adagrad lr 0.07 without momentum, 2048 extra negatives from popularity^0.2,
cross-entropy with full logQ correction, 10 epochs.

Command:
    .venv/bin/python bench/experiments/final.py gru4rec_yoochoose --seeds 0

Expected on yoochoose-1pct/split/test: near the official PyTorch code's
Recall@20 0.4749 / MRR@20 0.1976; this is the configuration timed against the
official 3,700 targets/s.
"""

from rnnrec_jax.config import ModelConfig, TrainConfig


def get_config() -> tuple[ModelConfig, TrainConfig]:
    """Returns (model config, train config)."""
    model = ModelConfig(
        item_capacity=6400,
        cell="gru",
        hidden_sizes=(480,),
        embedding_mode="tied",
        dropout_embedding=0.0,
        dropout_hidden=0.2,
    )
    train = TrainConfig(
        batch_size=48,
        n_sample=2048,
        sample_alpha=0.2,
        logq=1.0,
        loss="cross-entropy",
        optimiser="adagrad",
        learning_rate=0.07,
        momentum=0.0,
        epochs=10,
        steps_per_call=256,
    )
    return model, train
