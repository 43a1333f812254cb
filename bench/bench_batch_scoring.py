"""A micro-batch's step: one call per round against one call for the whole batch.

The serving benchmark's drain events (`bench_serving.make_events`: yoochoose-1pct
test and validation sessions in time order) cut into micro-batches of ``--batch``
events, as a worker takes them. Prints how many rounds (a user's r-th events
together) each batch holds, then times `stream_app.scoring.score_in_rounds` on the
same batches through the per-round `step` path and through the one-call
`ServingModel.step_events` path, interleaved, with the worker's garbage-collector
setting, and checks that both give the same items. Needs no broker. Figures only,
never pass/fail.

    .venv/bin/python bench/bench_batch_scoring.py [--model 1pct|default] [--explain on|off]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_serving import ensure_models, make_events  # noqa: E402

from bench.host import machine  # noqa: E402
from rnnrec_jax.model_io import load_trained_model  # noqa: E402
from stream_app.gc_tuning import tune_gc  # noqa: E402
from stream_app.scoring import UserSteps, score_in_rounds, scorer_from_trained  # noqa: E402
from stream_app.settings import WorkerSettings  # noqa: E402


class RoundsOnly:
    """Only the plain `Scorer` protocol of a scorer: forces one call per round."""

    def __init__(self, scorer: Any) -> None:
        self._scorer = scorer

    @property
    def version(self) -> str:
        return self._scorer.version

    def initial_carry(self) -> np.ndarray:
        return self._scorer.initial_carry()

    def step(self, *args: Any, **kwargs: Any) -> Any:
        return self._scorer.step(*args, **kwargs)


def batches_of(events: list[dict], size: int, explain: bool) -> list[list[UserSteps]]:
    """Micro-batches as the worker plans them (histories of the last 5 items)."""
    history: dict[str, list[str]] = collections.defaultdict(list)
    out = []
    for start in range(0, len(events), size):
        users: dict[str, UserSteps] = {}
        for e in events[start : start + size]:
            steps = users.setdefault(e["user_id"], UserSteps(carry=None))
            recent = history[e["user_id"]]
            recent.append(e["item_id"])
            del recent[:-5]
            steps.items.append(e["item_id"])
            steps.emit.append(True)
            steps.reset.append(False)
            steps.excluded.append(None)
            steps.times.append(e["ts"])
            steps.history.append(list(recent) if explain else None)
        out.append(list(users.values()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("1pct", "default"), default="1pct")
    parser.add_argument("--explain", choices=("on", "off"), default="on")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("command:", " ".join([sys.executable, *sys.argv]))
    print("machine:", machine())
    explain = args.explain == "on"
    model_dir = ensure_models(sys.executable, {args.model})[args.model]
    settings = WorkerSettings(explain_window=5 if explain else 0)
    scorer = scorer_from_trained(load_trained_model(model_dir), settings)
    scorer._model.warm_up(explain=explain, methods=("step",))  # the per-round path too
    events = [orjson.loads(v) for _, v, _ in make_events(args.batch * args.batches)]
    batches = batches_of(events, args.batch, explain)
    rounds = [max(len(u.items) for u in b) for b in batches]
    users = [len(b) for b in batches]
    print(f"{len(batches)} batches of {args.batch} events: users per batch median "
          f"{np.median(users):.0f}, rounds per batch mean {np.mean(rounds):.1f}, "
          f"median {np.median(rounds):.0f}, max {max(rounds)}")  # fmt: skip
    tune_gc(50_000)  # as the worker
    paths = {"one call per round": RoundsOnly(scorer), "one call per batch": scorer}
    times: dict[str, list[float]] = {name: [] for name in paths}
    results: dict[str, list] = {}
    for _ in range(args.repeats):
        for name, path in paths.items():
            out = []
            for batch in batches:
                start = time.perf_counter()
                out.append(score_in_rounds(path, batch, args.batch, 20))
                times[name].append(time.perf_counter() - start)
            results[name] = out
    same = total = 0
    for (a, _), (b, _) in zip(*results.values(), strict=True):
        for user_a, user_b in zip(a, b, strict=True):
            for x, y in zip(user_a, user_b, strict=True):
                total += 1
                same += x.items == y.items
    print(f"model {args.model}, explanations {args.explain}, median ms per batch:")
    for name, values in times.items():
        ms = 1e3 * float(np.median(values))
        print(f"  {name}: {ms:.1f} ms ({args.batch / ms * 1e3:,.0f} events/s)")
    print(f"same recommended items for {same:,} of {total:,} events")


if __name__ == "__main__":
    main()
