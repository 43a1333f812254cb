"""Model of the serving benchmark: the tiny config with room for the yoochoose-1pct
catalogue (about 5,900 items) and 2 epochs. Used by bench/bench_serving.py:

    rnnrec train --config bench/serving_model_config.py \
        --train /work/shared/data/yoochoose-1pct/split/train_full.tsv --out artifacts/bench/model-1pct
"""

import dataclasses

from rnnrec_jax.configs import tiny


def get_config():
    """Returns (model config, train config)."""
    model, train = tiny.get_config()
    return dataclasses.replace(model, item_capacity=6400), dataclasses.replace(train, epochs=2)
