"""The explanation's cost alone: `rnnrec_jax.explain.occlusion` of a 256-row batch.

The bench's default-config model (`bench_serving.ensure_models`: trained once on
yoochoose-1pct, cached), random 5-item histories with a fifth of the positions
padding, K = 20 recommended items per row. With ``--baseline-src`` (a copy of another
revision, e.g. ``git archive REV | tar -x -C DIR``) each round times both trees, each
in its own process (each imports its own package), alternately. Prints the median ms
per call of each process. Figures only, never pass/fail.

    .venv/bin/python bench/bench_occlusion.py [--baseline-src DIR] [--rounds 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CHILD = """
import sys, time
sys.path.insert(0, {root!r})
import jax, jax.numpy as jnp, numpy as np
from rnnrec_jax import explain
from rnnrec_jax.model_io import load_trained_model
trained = load_trained_model({model!r})
cfg, params = trained.model_cfg, trained.params
rng = np.random.default_rng(0)
history = rng.integers(1, 6000, ({rows}, 5))
history[rng.random(history.shape) < 0.2] = 0
history = jnp.asarray(history, jnp.int32)
items = jnp.asarray(rng.integers(1, 6000, ({rows}, 20)), jnp.int32)
run = jax.jit(lambda p, h, i: explain.occlusion(cfg, p, h, i, 3))
jax.block_until_ready(run(params, history, items))
times = []
for _ in range({calls}):
    start = time.perf_counter()
    jax.block_until_ready(run(params, history, items))
    times.append(time.perf_counter() - start)
print(f"{{1e3 * float(np.median(times)):.2f}}")
"""


def time_tree(root: Path, model: Path, rows: int, calls: int) -> float:
    """Median ms per occlusion call, measured in a fresh process of ``root``'s code."""
    code = CHILD.format(root=str(root), model=str(model), rows=rows, calls=calls)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    from bench_serving import ensure_models

    from bench.host import machine

    print("command:", " ".join([sys.executable, *sys.argv]))
    print("machine:", machine())
    model = ensure_models(sys.executable, {"default"})["default"]
    trees = {"current": ROOT}
    if args.baseline_src is not None:
        trees = {"baseline": args.baseline_src.resolve(), **trees}
    results: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, root in trees.items():
            results[name].append(time_tree(root, model, args.rows, args.calls))
    for name, values in results.items():
        print(f"{name}: occlusion of {args.rows} rows, median ms per call by round: "
              + ", ".join(f"{v:.2f}" for v in values))  # fmt: skip


if __name__ == "__main__":
    main()
