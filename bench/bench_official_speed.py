"""rnnrec's training speed beside the official GRU4Rec PyTorch code, same machine, same run.

ANCHORS.md gives the official code's targets/s as measured once on this machine
kind; CPUs of that kind differ between machines by 20 % and more, so this bench
times both on the machine at hand, in alternating rounds (rnnrec `--epochs` epochs,
then the official code `--epochs` epochs, repeated `--rounds` times), and reports
each side's median targets/s over the epochs after the first of every round (the
first compiles or warms up) and the ratio.

The official code is not part of this repository (its licence is its own): clone
https://github.com/hidasib/GRU4Rec_PyTorch_Official and give its folder as
`--official-dir`, and an interpreter with `torch` and `pandas` as `--official-python`
(a separate virtual environment keeps torch out of rnnrec's):

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch pandas
    .venv/bin/python bench/bench_official_speed.py --official-dir GRU4Rec_PyTorch_Official \\
        --official-python /tmp/torchenv/bin/python --configs gru4rec_yoochoose gru4rec_rsc15

The official run gets its parameters from the same rnnrec config (units, batch,
negatives, alpha, dropout, learning rate, momentum, logQ), on the CPU with torch's
default threads; its time per epoch is read from the `Epoch N --> ... (T s)` lines
its `fit` prints. targets/s = (events - sessions) / epoch seconds for both sides.
Writes bench/results/train_speed_vs_official.{json,md}; never passes or fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_train_speed import DATA, RESULTS, EpochRunner, machine  # noqa: E402

from rnnrec_jax import train  # noqa: E402
from rnnrec_jax.data.events import read_split_tsv  # noqa: E402

# Runs in the official code's interpreter: argv[1] = official folder, argv[2] = data,
# argv[3] = JSON keyword arguments for its GRU4Rec class.
OFFICIAL_DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import pandas as pd, torch
from gru4rec_pytorch import GRU4Rec
data = pd.read_csv(sys.argv[2], sep="\\t", dtype={"SessionId": "int64", "ItemId": "int64"})
print("torch", torch.__version__, "threads", torch.get_num_threads(), flush=True)
GRU4Rec(device=torch.device("cpu"), **json.loads(sys.argv[3])).fit(data)
"""
EPOCH_LINE = re.compile(r"Epoch\s*(\d+)\s*-->.*?\(([\d.]+)s\)")


def official_params(mc: Any, tc: Any, epochs: int) -> dict[str, Any]:
    """The official GRU4Rec keyword arguments equivalent to an rnnrec config."""
    if mc.cell != "gru" or tc.n_sample <= 0 or mc.attention or mc.purchase_head:
        raise SystemExit(f"bench_official_speed: no official equivalent of {mc.cell} config")
    return {
        "layers": list(mc.hidden_sizes),
        "loss": tc.loss,
        "batch_size": tc.batch_size,
        "dropout_p_embed": mc.dropout_embedding,
        "dropout_p_hidden": mc.dropout_hidden,
        "learning_rate": tc.learning_rate,
        "momentum": tc.momentum,
        "sample_alpha": tc.sample_alpha,
        "n_sample": tc.n_sample,
        "embedding": 0,
        "constrained_embedding": mc.embedding_mode == "tied",
        "n_epochs": epochs,
        "logq": tc.logq,
    }


def run_official(python: str, folder: Path, data: Path, params: dict[str, Any]) -> list[float]:
    """Runs the official trainer once; returns its seconds per epoch."""
    cmd = [python, "-c", OFFICIAL_DRIVER, str(folder), str(data), json.dumps(params)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = [float(m.group(2)) for m in EPOCH_LINE.finditer(proc.stdout)]
    if proc.returncode != 0 or len(seconds) != params["n_epochs"]:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise SystemExit(
            f"bench_official_speed: official run failed (rc {proc.returncode}):\n{tail}"
        )
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official-dir", type=Path, required=True)
    ap.add_argument("--official-python", required=True)
    ap.add_argument("--configs", nargs="+", default=["gru4rec_yoochoose", "gru4rec_rsc15"])
    ap.add_argument("--epochs", type=int, default=3, help="epochs per side per round (>= 2)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.epochs < 2 or args.rounds < 1:
        raise SystemExit("bench_official_speed: --epochs must be >= 2 and --rounds >= 1")
    if not (args.official_dir / "gru4rec_pytorch.py").is_file():
        raise SystemExit(f"bench_official_speed: no gru4rec_pytorch.py in {args.official_dir}")
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    mach = machine()
    print("command:", command)
    print("machine:", json.dumps(mach))
    events = read_split_tsv(args.data)
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    total_rounds = len(args.configs) * args.rounds
    for i_cfg, cfg_name in enumerate(args.configs):
        mc, tc = importlib.import_module(f"rnnrec_jax.configs.{cfg_name}").get_config()
        params = official_params(mc, tc, args.epochs)
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            runner = EpochRunner(train, mc, tc, events)
            n_targets = runner.n_targets
            ours = [runner.epoch()[0] for _ in range(args.epochs)]
            theirs = run_official(args.official_python, args.official_dir, args.data, params)
            rounds.append({"rnnrec_seconds": ours, "official_seconds": theirs})
            done = i_cfg * args.rounds + r + 1
            elapsed = time.perf_counter() - started
            print(
                f"{cfg_name} round {r + 1}: rnnrec "
                f"{', '.join(f'{n_targets / s:,.0f}' for s in ours)} targets/s; official "
                f"{', '.join(f'{n_targets / s:,.0f}' for s in theirs)} "
                f"[{done}/{total_rounds} rounds, ETA {elapsed / done * (total_rounds - done):.0f} s]",
                flush=True,
            )
        ours_after = [n_targets / s for rd in rounds for s in rd["rnnrec_seconds"][1:]]
        theirs_after = [n_targets / s for rd in rounds for s in rd["official_seconds"][1:]]
        results.append(
            {
                "config": cfg_name,
                "n_targets": n_targets,
                "rnnrec_median": float(np.median(ours_after)),
                "official_median": float(np.median(theirs_after)),
                "ratio": float(np.median(ours_after) / np.median(theirs_after)),
                "round_ratios": [
                    float(
                        np.median([n_targets / s for s in rd["rnnrec_seconds"][1:]])
                        / np.median([n_targets / s for s in rd["official_seconds"][1:]])
                    )
                    for rd in rounds
                ],
                "rounds": rounds,
                "official_params": params,
                "model_cfg": dataclasses.asdict(mc),
                "train_cfg": dataclasses.asdict(tc),
            }
        )
        write(args.out, command, mach, results)


def write(out: Path, command: str, mach: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """Writes the JSON record and the Markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_speed_vs_official.json").write_text(
        json.dumps({"command": command, "machine": mach, "results": results}, indent=1)
    )
    lines = [
        "# Training speed beside the official GRU4Rec PyTorch code (same machine, same run)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {mach['cpus_usable']} cores ({mach['cpu_model']}), jax {mach['jax']}, "
        f"load average {mach['load_avg_start'][0]} at start",
        "",
        "targets/s = (events - sessions) / epoch seconds; medians over the epochs after "
        "the first of each round; rounds alternate rnnrec and official.",
        "",
        "| config | rnnrec targets/s | official targets/s | x official | per round |",
        "|---|---:|---:|---:|---|",
    ]
    for r in results:
        per_round = ", ".join(f"{x:.2f}" for x in r["round_ratios"])
        lines.append(
            f"| {r['config']} | {r['rnnrec_median']:,.0f} | {r['official_median']:,.0f} "
            f"| {r['ratio']:.2f} | {per_round} |"
        )
    (out / "train_speed_vs_official.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'train_speed_vs_official.md'}")


if __name__ == "__main__":
    main()
