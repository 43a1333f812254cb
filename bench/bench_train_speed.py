"""Training speed in next-item targets per second, counted as the GRU4Rec code does.

targets/s = (events - sessions) of the training file / wall time of one epoch
(sampling negatives, building the chunks and running the compiled loop; no
evaluation), reported as the median over the epochs after the first (the first
one compiles). Each named config of `rnnrec_jax/configs` is timed on
yoochoose-1pct `train_full`.

With `--baseline-rev REV` the training step of git revision REV (its
`rnnrec_jax/{train,sparse_optim,sampling}.py`, read with `git show`; the other
modules are the working tree's) is timed in the same run, epochs interleaved
(baseline epoch 1, current epoch 1, baseline epoch 2, ...), so both see the same
machine load. On a shared machine compare the two columns, not absolute figures.

Usage:
    .venv/bin/python bench/bench_train_speed.py [--configs gru4rec_rsc15 ...]
        [--epochs 3] [--baseline-rev HEAD] [--no-progress]

Writes bench/results/train_speed.json and bench/results/train_speed.md. It never
passes or fails on the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rnnrec_jax import models  # noqa: E402
from rnnrec_jax import train as current_train  # noqa: E402
from rnnrec_jax.data.events import read_split_tsv  # noqa: E402

DATA = Path("/work/shared/data/yoochoose-1pct/split/train_full.tsv")
RESULTS = ROOT / "bench" / "results"
# Official GRU4Rec PyTorch on the same kind of 2-core machine (ANCHORS.md).
OFFICIAL = {
    "gru4rec_rsc15": 7_000,
    "gru4rec_yoochoose": 3_700,
    "default": 25_000,  # official tuned configuration (128 units, batch 176)
}
OFFICIAL_NOTE = {
    "gru4rec_rsc15": "official PyTorch, same config",
    "gru4rec_yoochoose": "official PyTorch, same config",
    "default": "official PyTorch, its tuned config (128 units, batch 176)",
}
STEP_FILES = ("train", "sparse_optim", "sampling")


def load_baseline(rev: str) -> types.ModuleType:
    """Imports the training step of git revision `rev` as a private module.

    Args:
      rev: git revision.

    Returns:
      Its train module, wired to its own sparse_optim and sampling.
    """
    pkg = "rnnrec_baseline"
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_speed_")) / pkg
    tmp.mkdir()
    (tmp / "__init__.py").write_text("")
    for name in STEP_FILES:
        src = subprocess.run(
            ["git", "show", f"{rev}:rnnrec_jax/{name}.py"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        src = src.replace(
            "from rnnrec_jax import losses, models, sampling, sparse_optim",
            f"from rnnrec_jax import losses, models\nfrom {pkg} import sampling, sparse_optim",
        )
        (tmp / f"{name}.py").write_text(src)
    sys.path.insert(0, str(tmp.parent))
    return importlib.import_module(f"{pkg}.train")


class EpochRunner:
    """One variant's training state, advanced an epoch at a time.

    Mirrors the epoch loop of `train.train_and_evaluate` (without evaluation):
    reset the carry, then per chunk draw negatives, slice the plan, run the chunk;
    the epoch ends when the summed loss is on the host.
    """

    def __init__(self, mod: types.ModuleType, mc: Any, tc: Any, events: Any) -> None:
        self.mod, self.tc = mod, tc
        vocab = mod.build_vocabulary(events)
        self.n_items = len(vocab)
        self.mc = dataclasses.replace(mc, n_items=self.n_items)
        self.enc = mod.encode_events(events, vocab)
        self.t0 = float(self.enc.times.min())
        counts = mod.item_counts(self.enc, self.mc.item_capacity)
        self.state, opts = mod.init_train_state(self.mc, tc)
        self.chunk_fn = mod.make_train_chunk(self.mc, tc, opts, counts, self.n_items)
        self.sampler = None
        if tc.n_sample > 0:
            self.sampler = mod.sampling.NegativeSampler(
                counts, tc.n_sample, tc.sample_alpha, tc.seed + 1, tc.sample_cache_steps
            )
        self.plan = mod.sampling.session_parallel_plan(self.enc.offsets, tc.batch_size)
        self.n_targets = self.enc.n_targets

    def epoch(self, bar: Any = None) -> tuple[float, float]:
        """Runs one epoch; returns (wall seconds, process CPU seconds, mean loss)."""
        tc, k = self.tc, self.tc.steps_per_call
        self.state = self.state._replace(carry=models.initial_carry(self.mc, tc.batch_size))
        t_start, c_start = time.perf_counter(), time.process_time()
        total = jnp.zeros(())
        for c in range(math.ceil(self.plan.n_steps / k)):
            negs = self.sampler.draw(k) if self.sampler is not None else np.zeros((k, 0), np.int32)
            batch = self.mod.plan_batches(self.plan, self.enc, self.t0, c * k, k, negs)
            self.state, step_losses = self.chunk_fn(self.state, batch)
            total = total + step_losses.sum()
            if bar is not None:
                bar.update(int(batch.weight.sum()))
        loss = float(total) / self.n_targets  # waits for the epoch to finish
        return time.perf_counter() - t_start, time.process_time() - c_start, loss


def machine() -> dict[str, Any]:
    """Cores, load and library versions of this machine."""
    load = os.getloadavg()
    cpus = os.cpu_count() or 1
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": cpus,
        "cpus_usable": affinity,
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": importlib.metadata.version("jaxlib"),
        "backend": jax.default_backend(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_avg_start": [round(x, 2) for x in load],
        "shared_machine": load[0] > 0.5 * affinity,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--configs", nargs="+", default=["gru4rec_rsc15", "gru4rec_yoochoose", "default"]
    )
    ap.add_argument("--epochs", type=int, default=3, help="epochs per variant (>= 2)")
    ap.add_argument("--baseline-rev", default=None, help="git revision to time alongside")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    mach = machine()
    print("command:", command)
    print("machine:", json.dumps(mach))
    if mach["shared_machine"]:
        print(
            f"NOTE shared machine: load average {mach['load_avg_start'][0]} on "
            f"{mach['cpus_usable']} cores; absolute figures are depressed, compare variants."
        )
    events = read_split_tsv(args.data)
    variants: dict[str, types.ModuleType] = {}
    if args.baseline_rev:
        variants[f"baseline@{args.baseline_rev}"] = load_baseline(args.baseline_rev)
    variants["current"] = current_train
    results: list[dict[str, Any]] = []
    for cfg_name in args.configs:
        mc, tc = importlib.import_module(f"rnnrec_jax.configs.{cfg_name}").get_config()
        print(
            f"\n== {cfg_name}: {json.dumps(dataclasses.asdict(mc))} {json.dumps(dataclasses.asdict(tc))}"
        )
        runners = {name: EpochRunner(mod, mc, tc, events) for name, mod in variants.items()}
        per: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
        for epoch in range(1, args.epochs + 1):
            for name, runner in runners.items():
                bar = None
                if not args.no_progress:
                    from tqdm.auto import tqdm

                    bar = tqdm(
                        total=runner.n_targets,
                        desc=f"{cfg_name} {name} epoch {epoch}",
                        unit="tgt",
                        unit_scale=True,
                        leave=False,
                        mininterval=2.0,
                    )
                seconds, cpu_seconds, loss = runner.epoch(bar)
                if bar is not None:
                    bar.close()
                rec = {
                    "epoch": epoch,
                    "seconds": seconds,
                    "targets_per_s": runner.n_targets / seconds,
                    "cpu_seconds": cpu_seconds,
                    "targets_per_cpu_s": runner.n_targets / cpu_seconds,
                    "loss": loss,
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                }
                per[name].append(rec)
                print(
                    f"{cfg_name:18s} {name:22s} epoch {epoch}: {seconds:7.2f} s "
                    f"{rec['targets_per_s']:9.0f} targets/s  (cpu {cpu_seconds:7.2f} s, "
                    f"{rec['targets_per_cpu_s']:7.0f} targets per cpu-s)  loss {loss:.4f}  "
                    f"load {rec['load_avg_1m']}",
                    flush=True,
                )
        n_targets = next(iter(runners.values())).n_targets
        for name, recs in per.items():
            later = recs[1:] or recs
            after = [r["targets_per_s"] for r in later]
            results.append(
                {
                    "config": cfg_name,
                    "variant": name,
                    "n_targets": n_targets,
                    "median_targets_per_s_after_first": float(np.median(after)),
                    "median_targets_per_cpu_s_after_first": float(
                        np.median([r["targets_per_cpu_s"] for r in later])
                    ),
                    "official_targets_per_s": OFFICIAL.get(cfg_name),
                    "official_note": OFFICIAL_NOTE.get(cfg_name, ""),
                    "epochs": recs,
                    "model_cfg": dataclasses.asdict(mc),
                    "train_cfg": dataclasses.asdict(tc),
                }
            )
        # Written after every config, so a long run leaves what it has measured.
        mach["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
        write(args.out, command, mach, results)


def write(out: Path, command: str, mach: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """Writes train_speed.json and train_speed.md and prints the summary table."""
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": command,
        "machine": mach,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "metric": "targets/s = (events - sessions) / epoch wall time, median after epoch 1",
        "secondary_metric": "targets per CPU-second of this process (less sensitive to "
        "other load; with 2 busy threads, wall time on a quiet machine is lower than CPU time)",
        "results": results,
    }
    (out / "train_speed.json").write_text(json.dumps(doc, indent=1) + "\n")
    base = {r["config"]: r for r in results if r["variant"].startswith("baseline")}
    lines = [
        "# Training speed (targets/s)",
        "",
        "targets/s = (events - sessions) / epoch wall time, median over epochs after the "
        "first (GRU4Rec's count); baseline and current epochs interleaved in one run.",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {mach['cpus_usable']} cores ({mach['cpu_model']}), jax {mach['jax']}, "
        f"load average {mach['load_avg_start'][0]} at start, {mach['load_avg_end'][0]} at end"
        + (" -- SHARED machine: absolute figures depressed" if mach["shared_machine"] else ""),
        "",
        "| config | variant | median targets/s (epochs 2+) | per epoch | vs baseline "
        "| targets per CPU-second | official | x official |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        med = r["median_targets_per_s_after_first"]
        b = base.get(r["config"])
        vs = f"{med / b['median_targets_per_s_after_first']:.2f}x" if b and b is not r else ""
        off = r["official_targets_per_s"]
        epochs = ", ".join(f"{e['targets_per_s']:.0f}" for e in r["epochs"])
        cpu = f"{r['median_targets_per_cpu_s_after_first']:,.0f}"
        official = f"{off:,} ({r['official_note']}) | {med / off:.2f}" if off else " | "
        lines.append(
            f"| {r['config']} | {r['variant']} | {med:,.0f} | {epochs} | {vs} | {cpu} | "
            f"{official} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "train_speed.md").write_text(text)
    print("\n" + text)
    print(f"wrote {out / 'train_speed.json'} and {out / 'train_speed.md'}")


if __name__ == "__main__":
    main()
