"""Official GRU4Rec RSC15 parameters (paramfiles/rsc15_xe_shared_best.py), reproduced.

100 GRU units, constrained (tied) embedding, batch 32, dropout 0.4 on the hidden
state, Adagrad lr 0.2 with momentum 0.2, 2048 extra negatives from popularity^0.5,
cross-entropy with full logQ correction, 10 epochs.

Command (trained on train_full, evaluated on test):
    .venv/bin/python bench/experiments/final.py gru4rec_rsc15 --seeds 0

Expected on yoochoose-1pct/split/test: close to the official PyTorch code's
Recall@20 0.5138 / MRR@20 0.2135 (see the report in bench/experiments/final.jsonl).
"""

from rnnrec_jax.config import ModelConfig, TrainConfig


def get_config() -> tuple[ModelConfig, TrainConfig]:
    """Returns (model config, train config)."""
    model = ModelConfig(
        item_capacity=6400,
        cell="gru",
        hidden_sizes=(100,),
        embedding_mode="tied",
        dropout_embedding=0.0,
        dropout_hidden=0.4,
    )
    train = TrainConfig(
        batch_size=32,
        n_sample=2048,
        sample_alpha=0.5,
        logq=1.0,
        loss="cross-entropy",
        optimiser="adagrad",
        learning_rate=0.2,
        momentum=0.2,
        epochs=10,
        steps_per_call=256,
    )
    return model, train
