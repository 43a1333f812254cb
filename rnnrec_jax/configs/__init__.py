"""Training configurations: each module exposes `get_config() -> (ModelConfig, TrainConfig)`."""
