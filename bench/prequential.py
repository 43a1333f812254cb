"""Prequential experiment: online fine-tuning against a frozen model, through the real system.

An offline model is trained on April to June of ``yoochoose-1pct/clicks.csv.gz``; then
July and August are streamed through the real system (the local broker, one
``rnnrec worker`` process, one ``rnnrec trainer`` process) twice: once with online
fine-tuning (daily in event time) and once frozen (``RNNREC_ONLINE_TRAINING_FROZEN``).
Recall@20 and MRR@20 per day are computed FROM THE OUTPUT TOPIC: each
``recommendations`` record is matched (by ``event_id``) to its input event and
judged against the next event of the session.

Protocol:

* Data: consecutive repeats removed (on the raw clicks, as the GRU4Rec split does).
  Offline training set: sessions that start before July 1, their events before July
  1, the GRU4Rec support filter (items with >= 5 events, sessions >= 2 events). The
  stream: every session starting on or after July 1 (``--days`` limits it), nothing
  filtered: an item the served model does not know is out of vocabulary for the
  worker, and a target on it is a miss (it is never recommended).
* The offline vocabulary has headroom (``--capacity`` rows) for the items the trainer
  adds; when full, the trainer evicts (`rnnrec_jax.finetune.grow_vocabulary`).

The barrier (why results do not depend on replay speed). The replay sends events in
event-time order and mirrors the trainer's cadence (`stream_app.trainer_window.Cadence`).
Before the first event at or after a boundary B it: (1) flushes every earlier event
and waits until the worker has answered all of them (its
``rnnrec_outputs_total{role="recommendations"}``), so no event before B can be served
by a model trained after B; (2) sends the one event that crosses B and waits until
the worker answered it too (still with the old model); (3) waits until the trainer's
``rnnrec_trainer_last_round_boundary_seconds`` reaches B (its decision for B is
recorded; the trainer itself reads every partition up to the crossing before the
round, so the round saw exactly the events before B); (4) when the trainer's current
version (``rnnrec_trainer_model_version_info``) differs from the worker's, waits until
the worker has it validated and staged or serving (``rnnrec_model_staged_info`` /
``rnnrec_model_version_info``). Only then does the replay go on: every event after
the crossing one is served by the model decided at B, however long fine-tuning took.

Serving throughput while a fine-tune runs (in the fine-tuning run, after the stream):
a burst of ``--burst`` events (drain rate: events / seconds until the worker answered
all) and ``--latency-seconds`` at ``--offered-rate`` events/s (latency = output
record's broker time - input record's broker time, LogAppendTime topics), first in
steady state, then while a separate process fine-tunes the served model on the last
week of the stream in a loop (`rnnrec_jax.finetune.fine_tune` with the trainer's
settings: the same work the trainer does each round, on the same two cores).

    .venv/bin/python bench/prequential.py --days 3      # a smoke slice
    .venv/bin/python bench/prequential.py               # the full July-August run

Writes bench/results/prequential.json and bench/results/prequential.png (the slice
run writes prequential-days<N>.*). Figures only: it never passes or fails on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "results"
ART = ROOT / "artifacts" / "prequential"
CLICKS = Path(os.environ.get("RNNREC_SHARED_DATA", "/work/shared/data")) / "yoochoose-1pct"
DAY = 86_400.0
JULY_1 = 1_404_172_800.0  # 2014-07-01T00:00:00Z
PARTITIONS = 2
TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}
K = 20


def log(msg: str) -> None:
    """One progress line."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import jax

    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


# --------------------------------------------------------------------------- data


def load_data(days: int | None) -> tuple[Any, Any]:
    """(offline training events, stream events) as described in the module docstring."""
    from rnnrec_jax.data import read_yoochoose_clicks
    from rnnrec_jax.data.split import filter_by_support, remove_consecutive_repeats

    clicks = remove_consecutive_repeats(read_yoochoose_clicks(CLICKS / "clicks.csv.gz"))
    start = clicks.session_start_times()[clicks.session_index()]
    train = clicks.filter_mask((start < JULY_1) & (clicks.times < JULY_1))
    train = filter_by_support(train, min_session_length=2, min_item_support=5)
    end = JULY_1 + days * DAY if days else math.inf
    stream = clicks.filter_mask((start >= JULY_1) & (start < end))
    return train, stream


def offline_model(train: Any, config: str, capacity: int, seed: int) -> Path:
    """Train (or reuse) the offline model; returns its checkpoint directory."""
    from rnnrec_jax.cli import load_config
    from rnnrec_jax.data.vocabulary import ItemVocabulary
    from rnnrec_jax.model_io import save_trained_model
    from rnnrec_jax.train import train_and_evaluate

    model_cfg, train_cfg = load_config(config)
    model_cfg = dataclasses.replace(model_cfg, item_capacity=capacity)
    train_cfg = dataclasses.replace(train_cfg, seed=seed)
    key = hashlib.sha256(
        f"{model_cfg.to_json()}{train_cfg.to_json()}{train.n_events}".encode()
    ).hexdigest()[:12]
    out = ART / f"model-{key}"
    if (out / "LATEST").exists():
        log(f"reusing the offline model {out}")
        return out
    vocab = ItemVocabulary.from_items(train.item_ids, capacity=capacity)
    log(
        f"training the offline model ({config}, capacity {capacity}): {train.n_events:,} "
        f"events, {train.n_sessions:,} sessions, {len(vocab):,} items"
    )
    result = train_and_evaluate(model_cfg, train_cfg, train, vocab=vocab, progress=True, log=log)
    save_trained_model(
        out, result.params, result.model_cfg, result.vocab, version="offline-1",
        train_cfg=result.train_cfg, purchase_calibration=result.purchase_calibration,
        metrics={"history": result.history},
    )  # fmt: skip
    return out


# ---------------------------------------------------------------------- processes


@dataclasses.dataclass
class Proc:
    """A started worker or trainer process and where it answers."""

    name: str
    popen: subprocess.Popen
    port: int
    log_path: Path

    def metrics(self) -> str:
        """The process's /metrics text ('' when it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                return r.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return ""

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value (0 when absent)."""
        return sample(self.metrics(), name, **labels)

    def alive(self) -> None:
        """Raise with the log's end when the process has exited."""
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 60 s; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(60)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return int(self.popen.returncode)

    def tail(self, chars: int = 3000) -> str:
        """The end of the process log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def sample(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name{labels}`` in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


def info_label(text: str, name: str, label: str = "version") -> str | None:
    """The label of the info gauge ``name`` whose value is 1."""
    for line in text.splitlines():
        if line.startswith(name + "{") and line.rstrip().endswith(" 1.0"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line))
            return found.get(label)
    return None


def start(name: str, args: list[str], env: dict[str, str], port: int, workdir: Path) -> Proc:
    """Start ``python <args>`` with ``env`` on top of this environment."""
    log_path = workdir / f"{name}.log"
    popen = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return Proc(name, popen, port, log_path)


def wait_until(check: Any, what: str, procs: list[Proc], timeout_s: float = 600.0) -> float:
    """Poll ``check()`` until true; returns the seconds waited."""
    started = time.monotonic()
    while True:
        for proc in procs:
            proc.alive()
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            tails = "\n---\n".join(f"{p.name}:\n{p.tail()}" for p in procs)
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tails}")
        time.sleep(0.1)


@dataclasses.dataclass
class System:
    """One run's topics, processes and settings."""

    mode: str
    prefix: str
    bootstrap: str
    worker: Proc
    trainer: Proc
    env: dict[str, str]

    def topic(self, role: str) -> str:
        names = {"recommendations": "recommendations", "clickstream": "clickstream"}
        return f"{self.prefix}-{names[role]}"

    def settings(self) -> Any:
        from stream_app.settings import load_settings

        return load_settings(bootstrap_servers=self.bootstrap, topic_prefix=f"{self.prefix}-")


def start_system(mode: str, model_dir: Path, bootstrap: str, workdir: Path, args: Any) -> System:
    """Topics, one worker, one trainer (frozen in the frozen mode), both ready."""
    from stream_app.kafka_io import create_topics
    from stream_app.model_registry import ensure_model_topic
    from stream_app.settings import load_settings

    prefix = f"preq-{mode}-{uuid.uuid4().hex[:6]}"
    roles = ("clickstream", "recommendations", "purchase-predictions", "clickstream-dlq")
    create_topics(
        bootstrap, [f"{prefix}-{r}" for r in roles], partitions=PARTITIONS, configs=TOPIC_CONFIG
    )
    ensure_model_topic(load_settings(bootstrap_servers=bootstrap, topic_prefix=f"{prefix}-"))
    common = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "RNNREC_TOPIC_PREFIX": f"{prefix}-",
        "RNNREC_PARTITIONS": str(PARTITIONS),
        "RNNREC_MODEL_SOURCE": str(model_dir),
        "RNNREC_TOP_K": str(K),
    }
    worker_port, trainer_port = free_port(), free_port()
    worker_env = {
        **common,
        "RNNREC_APP_ID": f"{prefix}-app",
        "RNNREC_WEB_PORT": str(worker_port),
        "RNNREC_DATA_DIR": str(workdir / f"{prefix}-data"),
        "RNNREC_EXPLAIN_WINDOW": "0",  # explanations are not judged here
        "RNNREC_COMMIT_INTERVAL_S": "1.0",
    }
    trainer_env = {
        **common,
        "RNNREC_TRAINER_GROUP_ID": f"{prefix}-trainer",
        "RNNREC_TRAINER_METRICS_PORT": str(trainer_port),
        "RNNREC_TRAINER_METRICS_BIND": "127.0.0.1",
        "RNNREC_TRAINER_INTERVAL_EVENT_TIME_S": str(DAY),
        "RNNREC_TRAINER_WINDOW_MAX_AGE_S": str(args.window_days * DAY),
        "RNNREC_TRAINER_FINETUNE_LR": str(args.lr),
        "RNNREC_TRAINER_FINETUNE_EPOCHS": str(args.epochs),
        "RNNREC_TRAINER_MARGIN": str(args.margin),
        "RNNREC_ONLINE_TRAINING_FROZEN": "true" if mode == "frozen" else "false",
    }
    worker = start(
        f"{mode}-worker", ["-m", "stream_app.cli", "worker", "-l", "warning"],
        worker_env, worker_port, workdir,
    )  # fmt: skip
    trainer = start(
        f"{mode}-trainer", ["-m", "stream_app.cli", "trainer", "-l", "info"],
        trainer_env, trainer_port, workdir,
    )  # fmt: skip
    system = System(mode, prefix, bootstrap, worker, trainer, {**worker_env, **trainer_env})

    def worker_ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{worker_port}/ready", timeout=2) as r:
                return r.status == 200 and bool(orjson.loads(r.read()).get("ready"))
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
            return False

    waited = wait_until(worker_ready, "the worker to be ready", [worker, trainer], 600)
    wait_until(lambda: bool(trainer.metrics()), "the trainer's /metrics", [worker, trainer], 600)
    log(f"{mode}: worker and trainer up ({waited:.0f} s), topics {prefix}-*")
    return system


# ------------------------------------------------------------------------ replay


def stream_records(stream: Any) -> list[tuple[float, bytes, bytes]]:
    """(ts, key, value) clickstream records in event-time order (deterministic ids)."""
    from stream_app.tools_replay import clickstream_records

    return list(clickstream_records(stream))


def replay_with_barrier(system: System, records: list[tuple[float, bytes, bytes]]) -> dict:
    """Send ``records`` with the barrier of the module docstring; returns timings."""
    from kafka import KafkaProducer
    from tqdm import tqdm

    from stream_app.trainer_window import Cadence

    worker, trainer = system.worker, system.trainer
    topic = system.topic("clickstream")
    producer = KafkaProducer(bootstrap_servers=system.bootstrap, acks="all", linger_ms=5)
    cadence = Cadence(DAY, 0)
    sent = 0
    base_outputs = worker.metric("rnnrec_outputs_total", role="recommendations")
    timings: dict[str, float] = defaultdict(float)
    rounds: list[dict[str, Any]] = []

    def answered() -> bool:
        done = worker.metric("rnnrec_outputs_total", role="recommendations") - base_outputs
        return done >= sent

    def send(key: bytes, value: bytes) -> None:
        nonlocal sent
        producer.send(topic, key=key, value=value)
        sent += 1

    started = time.monotonic()
    bar = tqdm(total=len(records), unit="ev", desc=system.mode, smoothing=0.05, mininterval=2)
    try:
        for ts, key, value in records:
            boundary = cadence.crossing(ts)
            if boundary is None:
                send(key, value)
                bar.update(1)
                continue
            t0 = time.monotonic()
            producer.flush()
            wait_until(answered, "the worker to answer every event before the boundary",
                       [worker, trainer])  # fmt: skip
            send(key, value)  # the event that crosses B: the trainer's trigger
            bar.update(1)
            producer.flush()
            wait_until(answered, "the worker to answer the crossing event", [worker, trainer])
            t1 = time.monotonic()
            wait_until(
                lambda b=boundary: trainer.metric("rnnrec_trainer_last_round_boundary_seconds")
                >= b,
                f"the trainer's round at {boundary}", [worker, trainer], 1800,
            )  # fmt: skip
            t2 = time.monotonic()
            version = info_label(trainer.metrics(), "rnnrec_trainer_model_version_info")

            def worker_has(v: str | None = version) -> bool:
                text = worker.metrics()
                return v is None or v in (
                    info_label(text, "rnnrec_model_version_info"),
                    info_label(text, "rnnrec_model_staged_info"),
                )

            wait_until(worker_has, f"the worker to stage {version}", [worker, trainer], 900)
            t3 = time.monotonic()
            timings["drain_s"] += t1 - t0
            timings["trainer_round_s"] += t2 - t1
            timings["swap_s"] += t3 - t2
            rounds.append(
                {"boundary": boundary, "version_after": version, "round_wait_s": t2 - t1,
                 "swap_wait_s": t3 - t2}
            )  # fmt: skip
            cadence.round_done(max(boundary, ts))
            elapsed = time.monotonic() - started
            bar.set_postfix_str(f"day {len(rounds)} {version} round {t2 - t1:.0f}s")
            log(
                f"{system.mode}: boundary {_day(boundary)} handled (round {t2 - t1:.1f} s, "
                f"swap {t3 - t2:.1f} s); {sent:,}/{len(records):,} events in {elapsed:.0f} s"
            )
        producer.flush()
        wait_until(answered, "the worker to answer every event", [worker, trainer])
    finally:
        bar.close()
        producer.close()
    timings["total_s"] = time.monotonic() - started
    return {"events_sent": sent, "timings": dict(timings), "rounds": rounds}


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


# ---------------------------------------------------------------------- outputs


def read_records(bootstrap: str, topic: str, start: dict[int, int] | None = None) -> list[Any]:
    """Every record of ``topic`` (from ``start`` offsets per partition when given)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        max_poll_records=5000, fetch_max_bytes=64 << 20,
    )  # fmt: skip
    try:
        parts = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, (start or {}).get(tp.partition, 0))
        ends = consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 600
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end")
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
        return out
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Current end offset per partition."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def score_outputs(stream: Any, outputs: list[Any], offline_items: set[str]) -> dict[str, Any]:
    """Recall@20 and MRR@20 per day from the recommendations, against the next event."""
    recs: dict[str, tuple[list[str], str]] = {}
    for record in outputs:
        doc = orjson.loads(record.value)
        recs.setdefault(doc["event_id"], (doc["items"], doc["model_version"]))  # dedupe
    per_day: dict[int, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0, 0])
    new_slots = new_hits = new_targets = missing = events_with_new = 0
    new_recommended: set[str] = set()
    versions: Counter[str] = Counter()
    offsets = stream.session_offsets()
    for s in range(stream.n_sessions):
        sid = str(stream.session_ids[offsets[s]])
        items = stream.item_ids[offsets[s] : offsets[s + 1]].tolist()
        times = stream.times[offsets[s] : offsets[s + 1]]
        for pos in range(len(items)):
            got = recs.get(f"{sid}-{pos}")
            if got is not None:
                versions[got[1]] += 1
                fresh = [i for i in got[0][:K] if i not in offline_items]
                new_slots += len(fresh)
                new_recommended.update(fresh)
                events_with_new += bool(fresh)
            if pos == len(items) - 1:
                continue
            day = int((times[pos] - JULY_1) // DAY)
            row = per_day[day]
            row[0] += 1
            target = items[pos + 1]
            target_new = target not in offline_items
            new_targets += target_new
            if got is None:
                missing += 1
                row[3] += 1
                continue
            top = got[0][:K]
            if target in top:
                rank = top.index(target) + 1
                row[1] += 1.0
                row[2] += 1.0 / rank
                new_hits += target_new
            row[4] += target_new
    days = []
    for day in sorted(per_day):
        n, hits, rr, miss, n_new = per_day[day]
        days.append(
            {"day": day, "date": _day(JULY_1 + day * DAY), "targets": n, "missing_outputs": miss,
             "targets_on_new_items": n_new, "recall@20": hits / n if n else 0.0,
             "mrr@20": rr / n if n else 0.0}
        )  # fmt: skip
    n_all = sum(d["targets"] for d in days)
    hits_all = sum(d["recall@20"] * d["targets"] for d in days)
    rr_all = sum(d["mrr@20"] * d["targets"] for d in days)
    return {
        "targets": n_all,
        "missing_outputs": missing,
        "outputs": len(recs),
        "recall@20": hits_all / n_all if n_all else 0.0,
        "mrr@20": rr_all / n_all if n_all else 0.0,
        "mean_daily_recall@20": float(np.mean([d["recall@20"] for d in days])) if days else 0.0,
        "mean_daily_mrr@20": float(np.mean([d["mrr@20"] for d in days])) if days else 0.0,
        "targets_on_items_not_in_offline_vocab": new_targets,
        "hits_on_items_not_in_offline_vocab": new_hits,
        "recommended_slots_with_new_items": new_slots,
        "distinct_new_items_recommended": len(new_recommended),
        "outputs_recommending_a_new_item": events_with_new,
        "outputs_by_model_version": dict(versions.most_common()),
        "per_day": days,
    }


def decisions_of(system: System) -> dict[str, Any]:
    """The trainer's decisions: counts from its metrics, records from the topic."""
    from stream_app.model_registry import read_registry

    text = system.trainer.metrics()
    counts = {
        outcome: sample(text, "rnnrec_trainer_decisions_total", outcome=outcome)
        for outcome in ("published", "rejected", "skipped", "frozen", "failed", "abandoned")
    }
    registry = read_registry(system.settings())
    records = sorted(
        (e.decision for e in registry.versions.values() if e.decision),
        key=lambda d: d.get("round", 0),
    )
    compact = [
        {k: d.get(k) for k in ("round", "boundary_ts", "decision", "candidate_version",
                               "parent_version", "reason", "seconds")}
        | {"candidate": _pick(d.get("candidate")), "serving": _pick(d.get("serving")),
           "vocabulary": {k: (d.get("vocabulary") or {}).get(k)
                          for k in ("added", "evicted", "deferred", "n_items")}}
        for d in records
    ]  # fmt: skip
    return {"counts": counts, "records": compact}


def _pick(report: dict | None) -> dict | None:
    if not report:
        return None
    return {k: report.get(k) for k in ("recall@20", "mrr@20", "n_targets", "n_oov_targets")}


# ------------------------------------------------------------------- throughput


def tp_records(stream: Any, tag: str, n: int) -> list[tuple[bytes, bytes, str]]:
    """``n`` events of the stream's last week, under fresh users and event ids (the
    week repeats, with another id prefix each time, when it holds fewer than ``n``)."""
    end = float(stream.times.max())
    records = [r for r in stream_records(stream) if r[0] >= end - 7 * DAY]
    out = []
    for i in range(n):
        _, _, value = records[i % len(records)]
        doc = orjson.loads(value)
        prefix = f"{tag}{i // len(records)}"
        doc["user_id"] = f"{prefix}-{doc['user_id']}"
        doc["session_id"] = f"{prefix}-{doc['session_id']}"
        doc["event_id"] = f"{prefix}-{doc['event_id']}"
        out.append((doc["user_id"].encode(), orjson.dumps(doc), doc["event_id"]))
    return out


def burst(system: System, events: list[tuple[bytes, bytes, str]]) -> dict[str, float]:
    """Drain rate: send all at once, seconds until the worker answered every one."""
    from kafka import KafkaProducer

    worker = system.worker
    base = worker.metric("rnnrec_outputs_total", role="recommendations")
    producer = KafkaProducer(bootstrap_servers=system.bootstrap, acks="all", linger_ms=20)
    started = time.monotonic()
    for key, value, _ in events:
        producer.send(system.topic("clickstream"), key=key, value=value)
    producer.flush()
    producer.close()
    waited = wait_until(
        lambda: worker.metric("rnnrec_outputs_total", role="recommendations") - base
        >= len(events),
        "the burst to be answered", [worker], 900,
    )  # fmt: skip
    seconds = time.monotonic() - started
    return {"events": len(events), "seconds": seconds, "events_per_s": len(events) / seconds,
            "wait_s": waited}  # fmt: skip


def offered(system: System, events: list[tuple[bytes, bytes, str]], rate: float) -> dict:
    """Latency percentiles at a fixed offered rate (LogAppendTime in to out)."""
    from kafka import KafkaProducer

    bootstrap = system.bootstrap
    in_start = end_offsets(bootstrap, system.topic("clickstream"))
    out_start = end_offsets(bootstrap, system.topic("recommendations"))
    worker = system.worker
    base = worker.metric("rnnrec_outputs_total", role="recommendations")
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    started = time.monotonic()
    sent = 0
    while sent < len(events):
        due = min(len(events), int((time.monotonic() - started) * rate) + 1)
        while sent < due:
            key, value, _ = events[sent]
            producer.send(system.topic("clickstream"), key=key, value=value)
            sent += 1
        time.sleep(0.002)
    producer.flush()
    producer.close()
    achieved = len(events) / (time.monotonic() - started)
    wait_until(
        lambda: worker.metric("rnnrec_outputs_total", role="recommendations") - base
        >= len(events),
        "the offered events to be answered", [worker], 900,
    )  # fmt: skip
    wanted = {eid for _, _, eid in events}
    t_in = {}
    for r in read_records(bootstrap, system.topic("clickstream"), in_start):
        eid = orjson.loads(r.value).get("event_id")
        if eid in wanted:
            t_in[eid] = r.timestamp
    latencies = []
    for r in read_records(bootstrap, system.topic("recommendations"), out_start):
        eid = orjson.loads(r.value).get("event_id")
        if eid in t_in:
            latencies.append(r.timestamp - t_in.pop(eid))
    lat = np.asarray(latencies, np.float64)
    return {
        "offered_per_s": rate,
        "achieved_per_s": achieved,
        "events": len(events),
        "matched": int(lat.size),
        **{f"p{q}_ms": float(np.percentile(lat, q)) for q in (50, 95, 99)},
        "max_ms": float(lat.max()) if lat.size else math.nan,
    }


def throughput_phase(system: System, stream: Any, args: Any, workdir: Path) -> dict[str, Any]:
    """Steady state against a concurrent fine-tune loop (see the module docstring)."""
    n_lat = int(args.offered_rate * args.latency_seconds)
    pool = tp_records(stream, "tp", 2 * args.burst + 2 * n_lat)
    chunks = [
        pool[: args.burst],
        pool[args.burst : args.burst + n_lat],
        pool[args.burst + n_lat : 2 * args.burst + n_lat],
        pool[2 * args.burst + n_lat :],
    ]
    log("throughput: steady state")
    steady = {
        "burst": burst(system, chunks[0]),
        "latency": offered(system, chunks[1], args.offered_rate),
    }
    log(f"  steady: {steady['burst']['events_per_s']:.0f} ev/s, "
        f"p99 {steady['latency']['p99_ms']:.0f} ms")  # fmt: skip
    load_log = workdir / "finetune-load.log"
    load = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--finetune-load",
         "--days", str(args.days or 0), "--lr", str(args.lr), "--epochs", str(args.epochs),
         "--window-days", str(args.window_days)],
        cwd=ROOT, env={**os.environ, **system.env, "PYTHONUNBUFFERED": "1"},
        stdout=load_log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while "fine-tune loop started" not in load_log.read_text(errors="replace"):
            if load.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fine-tune load did not start:\n{load_log.read_text()}")
            time.sleep(0.5)
        log("throughput: while fine-tuning")
        during = {
            "burst": burst(system, chunks[2]),
            "latency": offered(system, chunks[3], args.offered_rate),
        }
        log(f"  during fine-tune: {during['burst']['events_per_s']:.0f} ev/s, "
            f"p99 {during['latency']['p99_ms']:.0f} ms")  # fmt: skip
        still_running = load.poll() is None
    finally:
        load.send_signal(signal.SIGTERM)
        try:
            load.wait(60)
        except subprocess.TimeoutExpired:
            load.kill()
    finetunes = re.findall(r"fine-tune (\d+) done in ([\d.]+) s", load_log.read_text())
    return {
        "steady": steady,
        "during_fine_tune": during,
        "fine_tune_load_ran_throughout": still_running,
        "fine_tunes_during_measurement": len(finetunes),
        "fine_tune_seconds": [float(s) for _, s in finetunes],
        "throughput_ratio": during["burst"]["events_per_s"] / steady["burst"]["events_per_s"],
    }


def finetune_load(args: Any) -> None:
    """Fine-tune the served model on the stream's last window in a loop (until SIGTERM)."""
    from rnnrec_jax.finetune import drop_consecutive_repeats, fine_tune, grow_vocabulary
    from stream_app.model_registry import load_serving_model_from_topic
    from stream_app.settings import load_settings

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    settings = load_settings()
    model = load_serving_model_from_topic(settings)
    if model is None:
        from rnnrec_jax.model_io import load_trained_model

        model = load_trained_model(settings.model_source)
    _, stream = load_data(args.days or None)
    end = float(stream.times.max())
    window = drop_consecutive_repeats(
        stream.filter_mask(stream.times >= end - args.window_days * DAY)
    )
    grown, _ = grow_vocabulary(model, window.item_ids, window.times)
    print(f"fine-tune loop started on {window.n_events} events", flush=True)
    n = 0
    while not stopping:
        n += 1
        started = time.perf_counter()
        try:
            fine_tune(grown, window, epochs=args.epochs, learning_rate=args.lr, seed=n,
                      should_stop=lambda: bool(stopping))  # fmt: skip
        except Exception as exc:  # abandoned on SIGTERM, or a failure: stop either way
            print(f"stopped: {type(exc).__name__}", flush=True)
            break
        print(f"fine-tune {n} done in {time.perf_counter() - started:.1f} s", flush=True)


# ------------------------------------------------------------------------ report


def plot(report: dict[str, Any], path: Path) -> None:
    """Per-day Recall@20 and MRR@20 of both runs, and the new-item hits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for mode, style in (("finetune", "-o"), ("frozen", "--s")):
        run = report["runs"].get(mode)
        if not run:
            continue
        days = run["scores"]["per_day"]
        x = [d["day"] + 1 for d in days]
        for ax, metric in zip(axes, ("recall@20", "mrr@20"), strict=True):
            ax.plot(x, [d[metric] for d in days], style, ms=3, label=f"{mode} "
                    f"(all days {run['scores'][metric]:.3f})")  # fmt: skip
    for ax, metric in zip(axes, ("Recall@20", "MRR@20"), strict=True):
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[1].set_xlabel("day of the stream (July 1 = 1)")
    rel = report.get("relative_improvement", {})
    fig.suptitle(
        "Prequential yoochoose-1pct, streamed through worker + trainer: fine-tuned vs frozen"
        + (f"\nrelative: Recall@20 {rel.get('recall@20', 0):+.1%}, "
           f"MRR@20 {rel.get('mrr@20', 0):+.1%}" if rel else "")
    )  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_mode(mode: str, model_dir: Path, stream: Any, offline_items: set[str], args: Any,
             workdir: Path) -> dict[str, Any]:  # fmt: skip
    """One streamed run: start, replay with the barrier, score, (throughput), stop."""
    started = time.monotonic()
    system = start_system(mode, model_dir, args.bootstrap, workdir, args)
    try:
        records = stream_records(stream)
        replay = replay_with_barrier(system, records)
        outputs = read_records(args.bootstrap, system.topic("recommendations"))
        scores = score_outputs(stream, outputs, offline_items)
        decisions = decisions_of(system)
        throughput = None
        if mode == "finetune" and not args.no_throughput:
            throughput = throughput_phase(system, stream, args, workdir)
        worker_text = system.worker.metrics()
        health = {
            name: sample(worker_text, name)
            for name in ("rnnrec_model_swaps_total", "rnnrec_state_recomputed_total",
                         "rnnrec_oov_events_total", "rnnrec_redeliveries_total")
        }  # fmt: skip
    finally:
        trainer_exit = system.trainer.stop()
        worker_exit = system.worker.stop()
    log(
        f"{mode}: Recall@20 {scores['recall@20']:.4f} MRR@20 {scores['mrr@20']:.4f} over "
        f"{scores['targets']:,} targets ({scores['missing_outputs']} without output); "
        f"{time.monotonic() - started:.0f} s"
    )
    return {
        "prefix": system.prefix,
        "seconds": time.monotonic() - started,
        "replay": replay,
        "scores": scores,
        "decisions": decisions,
        "throughput": throughput,
        "worker_metrics": health,
        "exit_codes": {"trainer": trainer_exit, "worker": worker_exit},
        "logs": {"worker": str(system.worker.log_path), "trainer": str(system.trainer.log_path)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=0, help="Stream only N days (0: all).")
    parser.add_argument("--config", default="default", help="Offline config name.")
    parser.add_argument("--capacity", type=int, default=8192, help="Item table rows.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default="finetune,frozen")
    parser.add_argument("--window-days", type=float, default=7.0)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--margin", type=float, default=0.0)
    parser.add_argument("--burst", type=int, default=3000)
    parser.add_argument("--offered-rate", type=float, default=200.0)
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--finetune-load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"),
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.finetune_load:
        finetune_load(args)
        return

    from rnnrec_jax.model_io import load_trained_model
    from stream_app.kafka_local import broker_answers

    if not broker_answers(args.bootstrap, timeout_s=10):
        sys.exit(f"no Kafka broker answers at {args.bootstrap} (rnnrec kafka up)")
    suffix = f"-days{args.days}" if args.days else ""
    out = args.out or OUT / f"prequential{suffix}.json"
    started = time.monotonic()
    report: dict[str, Any] = {
        "command": "python bench/prequential.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "finetune_load")},
    }
    train, stream = load_data(args.days or None)
    model_dir = offline_model(train, args.config, args.capacity, args.seed)
    offline = load_trained_model(model_dir)
    offline_items = set(offline.vocab.items)
    report["data"] = {
        "offline_events": train.n_events,
        "offline_sessions": train.n_sessions,
        "offline_items": len(offline_items),
        "capacity": offline.vocab.capacity,
        "stream_events": stream.n_events,
        "stream_sessions": stream.n_sessions,
        "stream_days": math.ceil((stream.times.max() - JULY_1) / DAY),
        "stream_events_on_items_not_in_offline_vocab": int(
            np.isin(stream.item_ids, list(offline_items), invert=True).sum()
        ),
    }
    log(f"data: {json.dumps(report['data'])}")
    report["offline_training_s"] = time.monotonic() - started
    report["runs"] = {}
    with tempfile.TemporaryDirectory(prefix="prequential-") as tmp:
        workdir = Path(tmp)
        for mode in args.modes.split(","):
            report["runs"][mode] = run_mode(mode, model_dir, stream, offline_items, args, workdir)
            for name, path in report["runs"][mode]["logs"].items():
                keep = ART / "logs" / f"{mode}-{name}.log"
                keep.parent.mkdir(parents=True, exist_ok=True)
                keep.write_bytes(Path(path).read_bytes())
                report["runs"][mode]["logs"][name] = str(keep.relative_to(ROOT))
    runs = report["runs"]
    if "finetune" in runs and "frozen" in runs:
        ft, fr = runs["finetune"]["scores"], runs["frozen"]["scores"]
        report["relative_improvement"] = {
            m: (ft[m] / fr[m] - 1.0) if fr[m] else None for m in ("recall@20", "mrr@20")
        }
        report["goal_3pct_met"] = all(
            v is not None and v >= 0.03 for v in report["relative_improvement"].values()
        )
    total = time.monotonic() - started
    report["seconds_total"] = total
    streamed_days = max(1, report["data"]["stream_days"])
    per_day = {m: r["seconds"] / streamed_days for m, r in runs.items()}
    report["estimate_full_run_s"] = report["offline_training_s"] + sum(
        v * 62 for v in per_day.values()
    )
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float))
    plot(report, out.with_suffix(".png"))
    log(f"wrote {out} and {out.with_suffix('.png')} in {total:.0f} s")
    if "relative_improvement" in report:
        rel = report["relative_improvement"]
        log(f"relative improvement: Recall@20 {rel['recall@20']:+.2%}, MRR@20 {rel['mrr@20']:+.2%}")
    log(f"a full 62-day run would take about {report['estimate_full_run_s'] / 60:.0f} min")


if __name__ == "__main__":
    main()
