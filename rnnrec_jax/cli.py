"""``rnnrec split | train | evaluate``: the model library's command line.

Thin on purpose: argument parsing here, the work in `data.split`, `train` and
`evaluate`. Imports of JAX happen inside the commands so ``rnnrec --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)


def load_config(spec: str) -> tuple[Any, Any]:
    """Resolve ``--config``: a name under `rnnrec_jax.configs`, a module, or a .py file.

    Returns:
        ``(ModelConfig, TrainConfig)`` from the config's ``get_config()``.
    """
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_file():
            raise click.BadParameter(f"no such config file: {spec}", param_hint="--config")
        module_spec = importlib.util.spec_from_file_location(f"rnnrec_config_{path.stem}", path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # the user's file: any error in it is theirs to fix
            raise click.BadParameter(
                f"{spec} fails to load: {type(exc).__name__}: {exc}", param_hint="--config"
            ) from None
    else:
        name = spec if "." in spec else f"rnnrec_jax.configs.{spec}"
        try:
            module = importlib.import_module(name)
        except (ModuleNotFoundError, TypeError, ValueError):  # TypeError: "../x"
            raise click.BadParameter(
                f"unknown config {spec!r} (a name in rnnrec_jax/configs/ or a .py file)",
                param_hint="--config",
            ) from None
    if not hasattr(module, "get_config"):
        raise click.BadParameter(f"{spec} has no get_config()", param_hint="--config")
    return module.get_config()


def _read_events(path: Path) -> Any:
    from rnnrec_jax.data.events import read_split_tsv

    try:
        events = read_split_tsv(path)
    except ValueError as exc:  # the reader's message names the file
        raise click.ClickException(str(exc)) from None
    except KeyError as exc:
        raise click.ClickException(
            f"{path}: not a split TSV (SessionId, ItemId, Time): {exc}"
        ) from None
    # A target is an event with one before it in its session.
    _, counts = np.unique(np.asarray(events.session_ids), return_counts=True)
    if not (counts >= 2).any():
        raise click.ClickException(
            f"{path}: no session has two events or more ({counts.sum()} events): "
            "nothing to learn or evaluate"
        )
    return events


def _buy_times(buys_path: Path | None) -> dict[str, float] | None:
    if buys_path is None:
        return None
    from rnnrec_jax.data.purchases import first_buy_times
    from rnnrec_jax.data.raw import read_yoochoose_buys

    try:
        buys = read_yoochoose_buys(buys_path)
    except ValueError as exc:  # the reader's message names the file
        raise click.ClickException(str(exc)) from None
    series = first_buy_times(buys)
    return {str(k): float(v) for k, v in series.items()}


@click.command()
@click.option(
    "--raw",
    "raw_dir",
    type=existing_dir,
    required=True,
    help="Folder with YooChoose clicks.csv.gz and buys.csv.gz.",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--days",
    type=click.FloatRange(min=0.01),
    default=7.0,
    show_default=True,
    help="Length of the test (and validation) period.",
)
def split(raw_dir: Path, out_dir: Path, days: float) -> None:
    """Make the GRU4Rec split (train_full/test/train_tr/train_valid) from raw YooChoose."""
    from rnnrec_jax.data.raw import read_yoochoose
    from rnnrec_jax.data.split import gru4rec_split, write_split

    if not math.isfinite(days):  # FloatRange lets nan and inf through
        raise click.BadParameter(f"{days} is not a number of days", param_hint="--days")
    try:
        log = read_yoochoose(raw_dir)
        parts = gru4rec_split(log.events, days=days)
    except ValueError as exc:
        raise click.ClickException(f"cannot split {raw_dir} with --days {days:g}: {exc}") from None
    written = write_split(parts, log.buys, out_dir)
    for name, part in parts.items():
        click.echo(f"{name:12s} {part.n_events:9,d} events {part.n_sessions:8,d} sessions")
    click.echo(f"wrote {len(written)} files to {out_dir}")


@click.command()
@click.option(
    "--config",
    "config_spec",
    default="default",
    show_default=True,
    help="Config name in rnnrec_jax/configs/, a module path, or a .py file.",
)
@click.option("--train", "train_path", type=existing_file, required=True, help="Training TSV.")
@click.option(
    "--valid",
    "valid_path",
    type=existing_file,
    default=None,
    help="Validation TSV: evaluates every epoch and early-stops (if the config has patience).",
)
@click.option(
    "--buys",
    "buys_path",
    type=existing_file,
    default=None,
    help="YooChoose buys.csv.gz: trains the purchase head on real labels.",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="Override the config's epochs."
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=None, help="Override the config's seed."
)
@click.option(
    "--version",
    "version",
    default=None,
    help="Model version to write (default: 'm-' and a digest of the params, so two "
    "different models never share a name on model-updates or in a worker's state).",
)
def train(
    config_spec: str,
    train_path: Path,
    valid_path: Path | None,
    buys_path: Path | None,
    out_dir: Path,
    epochs: int | None,
    seed: int | None,
    version: str | None,
) -> None:
    """Train a model and write a verified checkpoint, its history and a training curve."""
    from rnnrec_jax.finetune import params_digest
    from rnnrec_jax.model_io import save_trained_model
    from rnnrec_jax.plots import plot_training_curve
    from rnnrec_jax.train import train_and_evaluate

    model_cfg, train_cfg = load_config(config_spec)
    # Before the work, not after it: a path that cannot be written fails now.
    out_dir.mkdir(parents=True, exist_ok=True)
    overrides = {k: v for k, v in (("epochs", epochs), ("seed", seed)) if v is not None}
    train_cfg = dataclasses.replace(train_cfg, **overrides)
    train_events = _read_events(train_path)
    valid_events = _read_events(valid_path) if valid_path else None
    buy_times = _buy_times(buys_path)
    started = time.time()
    result = train_and_evaluate(
        model_cfg, train_cfg, train_events, valid_events,
        buy_times=buy_times, valid_buy_times=buy_times,
    )  # fmt: skip
    metrics = {"best_epoch": result.best_epoch, "train_seconds": round(time.time() - started, 1)}
    if result.valid_report:
        metrics["valid"] = {
            k: v for k, v in result.valid_report.items() if not k.endswith("reliability")
        }
    # Every model was "1" before: a worker's local fallback and a version on the topic
    # could then share a name with other params, and the follower never swapped.
    version = version or "m-" + params_digest(result.params)[:12]
    path = save_trained_model(
        out_dir, result.params, result.model_cfg, result.vocab, version=version,
        train_cfg=result.train_cfg, purchase_calibration=result.purchase_calibration,
        metrics=metrics, item_counts=result.item_counts,
    )  # fmt: skip
    (out_dir / "history.json").write_text(json.dumps(result.history, indent=2, default=float))
    plot_training_curve(result.history, out_dir / "training_curve.png")
    click.echo(f"model version {version} written to {path} ({metrics['train_seconds']} s)")


def format_report(report: dict[str, Any]) -> str:
    """A short table of the headline figures of an evaluation report."""
    lines = [f"{'K':>4} {'Recall@K':>9} {'MRR@K':>8}"]
    for k in (1, 5, 10, 20):
        if f"recall@{k}" in report:
            lines.append(f"{k:>4} {report[f'recall@{k}']:9.4f} {report[f'mrr@{k}']:8.4f}")
    lines.append(
        f"targets {report.get('n_targets', 0):,}  sessions {report.get('n_sessions', 0):,}"
    )
    if "coverage@20" in report:
        lines.append(f"coverage@20 {report['coverage@20']:.4f}  gini@20 {report['gini@20']:.4f}")
    if "purchase_auc" in report:
        lo, hi = report.get("purchase_auc_ci95", (float("nan"), float("nan")))
        lines.append(
            f"purchase AUC {report['purchase_auc']:.4f} (95% bootstrap {lo:.3f}-{hi:.3f})  "
            f"Brier {report['purchase_brier']:.4f} vs base rate {report['purchase_brier_base_rate']:.4f}"
        )
    return "\n".join(lines)


@click.command()
@click.option("--model", "model_path", type=existing_dir, required=True, help="Checkpoint folder.")
@click.option("--test", "test_path", type=existing_file, required=True, help="Test TSV.")
@click.option(
    "--buys",
    "buys_path",
    type=existing_file,
    default=None,
    help="YooChoose buys.csv.gz: adds purchase AUC, Brier and reliability.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON report path (default: <model>/eval_<test>.json).",
)
def evaluate(
    model_path: Path, test_path: Path, buys_path: Path | None, report_path: Path | None
) -> None:
    """Evaluate a model with the GRU4Rec protocol; print and save the report and plots."""
    from rnnrec_jax.checkpoint import CheckpointError
    from rnnrec_jax.evaluate import evaluate as run_evaluation
    from rnnrec_jax.model_io import load_trained_model
    from rnnrec_jax.plots import plot_recall_at_k

    try:
        model = load_trained_model(model_path)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    events = _read_events(test_path)
    report_path = report_path or model_path / f"eval_{test_path.stem}.json"
    if not os.access(report_path.parent, os.W_OK):  # before the work, not after it
        raise click.BadParameter(f"cannot write to {report_path.parent}", param_hint="--report")
    report = run_evaluation(
        model.model_cfg, events, params=model.params, vocab=model.vocab,
        buy_times=_buy_times(buys_path), calibration=model.purchase_calibration,
    )  # fmt: skip
    report["model_version"] = model.version
    report_path.write_text(json.dumps(report, indent=2, default=float))
    plot_recall_at_k(
        {k: report[f"recall@{k}"] for k in (1, 5, 10, 20) if f"recall@{k}" in report},
        report_path.with_suffix(".recall.png"),
    )
    click.echo(format_report(report))
    click.echo(f"report written to {report_path}")
