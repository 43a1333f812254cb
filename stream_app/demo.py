"""``make demo``: the whole service on the embedded default, start to finish.

Local broker up, a small model trained on synthetic sessions, a real serving worker,
events replayed at a steady rate, a live view of throughput, latency and sample
recommendations, a short report with a latency histogram, and a clean shutdown.
Latency is measured as DESIGN.md defines it: from the input record's broker
timestamp to the output record's broker timestamp (both topics use log-append time).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import orjson

from stream_app.kafka_io import create_topics
from stream_app.kafka_local import demo_bootstrap

LOG_APPEND = {"message.timestamp.type": "LogAppendTime"}


@dataclass
class LiveStats:
    """What the output consumer has seen so far (shared with the display thread)."""

    input_ts_ms: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    outputs: int = 0
    purchases: int = 0
    last_rec: dict | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_demo_model(out_dir: Path, n_sessions: int, n_items: int, seed: int) -> Path:
    """Train the tiny config on synthetic sessions; returns the checkpoint root."""
    from rnnrec_jax.configs.tiny import get_config
    from rnnrec_jax.data.synthetic import generate_sessions
    from rnnrec_jax.model_io import save_trained_model
    from rnnrec_jax.train import train_and_evaluate

    train_events, _ = generate_sessions(n_sessions, n_items, seed=seed)
    valid_events, _ = generate_sessions(max(200, n_sessions // 10), n_items, seed=seed + 1)
    model_cfg, train_cfg = get_config()
    result = train_and_evaluate(model_cfg, train_cfg, train_events, valid_events)
    report = result.valid_report or {}
    metrics = {k: report[k] for k in ("recall@20", "mrr@20") if k in report}
    save_trained_model(
        out_dir, result.params, result.model_cfg, result.vocab, version="1",
        train_cfg=result.train_cfg, purchase_calibration=result.purchase_calibration,
        metrics=metrics,
    )  # fmt: skip
    click.echo(f"model v1: valid Recall@20 {metrics.get('recall@20', float('nan')):.3f}")
    return out_dir


def _consume_outputs(
    bootstrap: str, topics: dict[str, str], stats: LiveStats, stop: threading.Event
) -> None:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topics["clickstream"], topics["recommendations"], topics["purchase_predictions"],
        bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
    )  # fmt: skip
    pending: dict[str, int] = {}
    try:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    doc = orjson.loads(r.value)
                    event_id = doc.get("event_id", "")
                    with stats.lock:
                        if r.topic == topics["clickstream"]:
                            stats.input_ts_ms[event_id] = r.timestamp
                            if event_id in pending:
                                stats.latencies_ms.append(pending.pop(event_id) - r.timestamp)
                        elif r.topic == topics["recommendations"]:
                            stats.outputs += 1
                            stats.last_rec = doc
                            sent = stats.input_ts_ms.pop(event_id, None)
                            if sent is None:
                                pending[event_id] = r.timestamp
                            else:
                                stats.latencies_ms.append(r.timestamp - sent)
                        else:
                            stats.purchases += 1
    finally:
        consumer.close()


def _wait_ready(port: int, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"the worker exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise click.ClickException("the worker did not become ready in time")


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return (float("nan"),) * 3
    p = np.percentile(np.asarray(values), [50, 95, 99])
    return float(p[0]), float(p[1]), float(p[2])


def _show(stats: LiveStats, sent: int, started: float) -> None:
    with stats.lock:
        lat = list(stats.latencies_ms)
        outputs, rec = stats.outputs, stats.last_rec
    elapsed = max(time.monotonic() - started, 1e-6)
    p50, p95, p99 = _percentiles(lat[-2000:])
    click.echo(
        f"[{elapsed:5.1f}s] sent {sent:6d}  recommendations {outputs:6d} "
        f"({outputs / elapsed:6.0f}/s)  latency ms p50 {p50:5.1f} p95 {p95:5.1f} p99 {p99:5.1f}"
    )
    if rec:
        items = ", ".join(rec["items"][:5])
        click.echo(
            f"         user {rec['user_id']}: top-5 [{items}] (model v{rec['model_version']})"
        )
        why = _why_first(rec)
        if why:
            click.echo(f"         why {rec['items'][0]}: {why}")


def _why_first(rec: dict[str, Any]) -> str:
    """The recent items that raised the first recommendation's score, strongest first
    ("a +0.51, b +0.12"); empty when the message has no weight matrix.

    An item clicked more than once in the window is named once, with its largest
    weight: two clicks in a row have equal weights (leaving out either one leaves the
    same window), and the view says which items, not which positions.
    """
    why = rec.get("explanation") or {}
    recent, weights = why.get("recent_items"), why.get("weights")
    if not recent or not weights or len(weights[0]) != len(recent):
        return ""
    strongest: dict[str, float] = {}
    for item, w in zip(recent, weights[0], strict=True):
        if w > 0 and w > strongest.get(item, 0.0):
            strongest[item] = w
    causes = sorted(((w, item) for item, w in strongest.items()), reverse=True)
    return ", ".join(f"{item} {w:+.2f}" for w, item in causes) or "no recent item raised it"


def write_report(run_dir: Path, stats: LiveStats, sent: int, seconds: float, rate: float) -> Path:
    """Write ``report.md`` and ``latency.png`` for the run; returns the report path."""
    from rnnrec_jax.plots import plot_latency_histogram

    p50, p95, p99 = _percentiles(stats.latencies_ms)
    png = plot_latency_histogram(stats.latencies_ms or [0.0], run_dir / "latency.png")
    lines = [
        "# rnnrec demo run",
        "",
        f"* events sent: {sent} at {rate:.0f} events/s offered",
        f"* recommendations received: {stats.outputs}; purchase predictions: {stats.purchases}",
        f"* wall time: {seconds:.1f} s; machine: {os.cpu_count()} CPUs",
        f"* latency (input broker timestamp to output broker timestamp, ms): "
        f"p50 {p50:.1f}, p95 {p95:.1f}, p99 {p99:.1f} over {len(stats.latencies_ms)} events",
        "",
        f"![latency histogram]({png.name})",
    ]
    if stats.last_rec:
        lines += ["", "Last recommendation:", "", "```json",
                  orjson.dumps(stats.last_rec, option=orjson.OPT_INDENT_2).decode(), "```"]  # fmt: skip
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_demo(
    run_dir: Path, sessions: int = 3000, items: int = 500, rate: float = 300.0,
    seconds: float = 20.0, keep_broker: bool = False,
) -> LiveStats:  # fmt: skip
    """Run the full demo; returns what the output consumer saw."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with demo_bootstrap(keep_broker, click.echo) as bootstrap:
        return _serve_demo(run_dir, bootstrap, sessions, items, rate, seconds)


def _serve_demo(
    run_dir: Path, bootstrap: str, sessions: int, items: int, rate: float, seconds: float
) -> LiveStats:
    """The demo against a running broker: train, serve, replay, report."""
    from rnnrec_jax.data.synthetic import generate_event_log
    from stream_app.tools_replay import replay

    worker = None
    stop = threading.Event()
    stats = LiveStats()
    try:
        click.echo(f"training a small model on {sessions} synthetic sessions ...")
        model_dir = train_demo_model(run_dir / "model", sessions, items, seed=0)
        prefix = f"demo-{uuid.uuid4().hex[:6]}-"
        topics = {
            role: f"{prefix}{name}"
            for role, name in (("clickstream", "clickstream"), ("recommendations", "recommendations"),
                               ("purchase_predictions", "purchase-predictions"))
        }  # fmt: skip
        # Created before the worker so both ends of the latency use log-append time.
        create_topics(bootstrap, list(topics.values()), partitions=6, configs=LOG_APPEND)
        port = _free_port()
        env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            RNNREC_TOPIC_PREFIX=prefix,
            RNNREC_APP_ID=f"{prefix}worker",
            RNNREC_MODEL_SOURCE=str(model_dir),
            RNNREC_WEB_PORT=str(port),
            RNNREC_DATA_DIR=str(run_dir / "worker-data"),
        )
        log = open(run_dir / "worker.log", "ab")  # noqa: SIM115 - closed after the worker stops
        worker = subprocess.Popen(
            [sys.executable, "-m", "stream_app.cli", "worker", "-l", "warn"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        click.echo("waiting for the worker to be ready ...")
        _wait_ready(port, worker)
        consumer = threading.Thread(
            target=_consume_outputs, args=(bootstrap, topics, stats, stop), daemon=True
        )
        consumer.start()
        # Returning users: the generator's user ids key the events, as a shop would.
        events = generate_event_log(int(rate * seconds / 3.5) + 50, items, 7).merged()
        n_events = int(rate * seconds)
        started = time.monotonic()
        feeder = threading.Thread(
            target=replay,
            kwargs=dict(events=events, bootstrap=bootstrap, topic=topics["clickstream"],
                        rate=rate, limit=n_events, progress=False),
            daemon=True,
        )  # fmt: skip
        feeder.start()
        while feeder.is_alive():
            feeder.join(timeout=2.0)
            _show(stats, min(n_events, int((time.monotonic() - started) * rate)), started)
        drain_deadline = time.monotonic() + 30
        while stats.outputs < n_events and time.monotonic() < drain_deadline:
            time.sleep(0.5)
        _show(stats, n_events, started)
        report = write_report(run_dir, stats, n_events, time.monotonic() - started, rate)
        click.echo(f"report: {report}")
        if stats.outputs < n_events:
            raise click.ClickException(
                f"only {stats.outputs} of {n_events} events got recommendations"
            )
        return stats
    finally:
        stop.set()
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
