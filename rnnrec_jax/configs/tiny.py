"""A tiny configuration for smoke tests and the demo: trains in seconds on 2 cores.

Command (synthetic data written by the tests or the demo):
    rnnrec train --config tiny --train train.tsv --out model/

Expected: beats popularity clearly on the synthetic generator's sessions; not meant
for real data (use `default`).
"""

from rnnrec_jax.config import ModelConfig, TrainConfig


def get_config() -> tuple[ModelConfig, TrainConfig]:
    """Returns (model config, train config)."""
    model = ModelConfig(
        item_capacity=1024,
        cell="gru",
        hidden_sizes=(64,),
        embedding_mode="tied",
        dropout_embedding=0.0,
        dropout_hidden=0.1,
        purchase_head=True,
        purchase_loss_weight=0.1,
    )
    train = TrainConfig(
        batch_size=64,
        n_sample=-1,
        loss="cross-entropy",
        optimiser="adagrad",
        learning_rate=0.2,
        momentum=0.3,
        epochs=3,
        steps_per_call=32,
    )
    return model, train
