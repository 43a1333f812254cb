"""GRU with a NARM/STAMP-style residual readout and cosine (scaled, normalised) scores.

Chosen on train_tr -> train_valid (bench/experiments/trials.jsonl, trial
`narm_cos_lr007`): valid Recall@20 0.5744 / MRR@20 0.2315 at epoch 4 (of 10, patience 2).

Model: GRU 128 units, tied input/output item embeddings, dropout 0.2 (embedding) and
0.35 (hidden). Readout: rep = h_t + W [attention-pooled session states (window 16);
current item embedding; mean item embedding of the session], W initialised to zero
so training starts from the plain GRU readout. Scores: cosine between rep and the
item embeddings times a learned scale (init 10), plus the item bias. Full-softmax
cross-entropy over all items, GRU4Rec's Adagrad with momentum (lr 0.07, momentum
0.35), batch 176, 4 epochs. A jointly trained purchase head (weight 0.1) as before.

Command (train_full -> test, 3 seeds):
    .venv/bin/python bench/experiments/final.py narm_cos --seeds 0 1 2
"""

from rnnrec_jax.config import ModelConfig, TrainConfig


def get_config() -> tuple[ModelConfig, TrainConfig]:
    """Returns (model config, train config)."""
    model = ModelConfig(
        item_capacity=6400,
        cell="gru",
        hidden_sizes=(128,),
        embedding_mode="tied",
        attention=True,
        attention_mode="residual",
        attention_window=16,
        readout_last_item=True,
        readout_mean_item=True,
        score_norm=True,
        score_scale_init=10.0,
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
        learning_rate=0.07,
        momentum=0.35,
        epochs=4,
        steps_per_call=64,
    )
    return model, train
