"""Soak benchmark: N minutes at a fixed fraction of the worker's capacity.

One worker process serves a real model (default: the yoochoose-1pct model that
``bench/bench_serving.py`` trains into ``artifacts/bench/model-1pct``) on fresh topics
created with ``message.timestamp.type=LogAppendTime``. Live-looking events (a fixed
population of users, sessions of 2 to 12 events, items drawn from the model's
vocabulary with a Zipf-like skew, event time = now) are produced at ``fraction x
capacity`` events/s, paced every 100 ms, while the recommendations topic is read
back. Reported:

* worker RSS (from /proc) every 5 s, and its slope after the first minutes;
* per minute: events produced, outputs, latency p50/p95/p99/max (output broker
  timestamp minus input broker timestamp, matched by event id, first output);
* loss: every produced event must have a recommendation at the end (missing ids are
  counted, duplicates too);
* per minute, to tell the worker's own time from waiting: CPU used by the worker, the
  broker and this driver (from /proc), the worker's mean batch size and step time and
  its garbage-collector passes (scraped from its ``/metrics``).

The capacity is an argument (``--capacity``; BENCHMARKS.md measured about 1,000 to
1,700 events/s for this worker with the 1pct model on the project machine), so the
offered rate is explicit. Validate with ``--minutes 1``; the full run is 30 minutes.

    .venv/bin/python bench/soak.py --minutes 1 --capacity 1000
    .venv/bin/python bench/soak.py --minutes 30 --capacity 1000

A user's state grows with each event until it holds its last L events, so with many
users the table is still filling after 30 minutes. ``--prefill-events 50`` first gives
every user 50 events (as fast as the worker drains them) and starts the timed run from
that steady state:

    .venv/bin/python bench/soak.py --minutes 30 --capacity 851 --prefill-events 50

Full states make each event dearer than the small states of a drain benchmark on fresh
topics, so measure the capacity there: with ``--capacity prefill`` and more pre-fill
events than the history length, the pre-fill's last rounds are a drain of a pre-loaded
topic at full state size, and the timed run offers ``fraction`` of that rate:

    .venv/bin/python bench/soak.py --minutes 30 --capacity prefill --prefill-events 55

Writes bench/results/soak.{json,md} and soak.png. Figures only, no pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import orjson
from host import cpu_seconds, free_port, machine, rss_bytes

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
DEFAULT_MODEL = ROOT / "artifacts" / "bench" / "model-1pct"
TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}
ROLES = ("clickstream", "recommendations", "purchase-predictions", "clickstream-dlq")


_STARTED = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _STARTED:7.1f} s] {msg}", flush=True)


def vocabulary(model: Path | None) -> list[str]:
    """Item ids the served model knows (a synthetic catalogue without a model)."""
    if model is None:
        return [str(i) for i in range(1, 5001)]
    from rnnrec_jax.model_io import load_trained_model

    return [str(x) for x in load_trained_model(model).vocab.items]


class EventSource:
    """Events of a fixed user population; each user walks through short sessions."""

    def __init__(self, users: int, items: list[str], seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.items = items
        # Zipf-like popularity: item rank r drawn with weight 1 / (r + 10).
        weights = np.array([1.0 / (r + 10) for r in range(len(items))])
        self.cdf = np.cumsum(weights / weights.sum()).tolist()
        self.users = users
        self.left = [0] * users
        self.session = [0] * users
        self.n = 0
        self.prefilled = 0

    def next(self, user: int | None = None, prefix: str = "e") -> tuple[bytes, bytes, int]:
        """``(key, value, event index)`` of the next event (of ``user``, else a random one).

        Events of the timed run have ids ``e<index>``; pre-fill events use another
        ``prefix`` and their own count, so the run's arrays index only its own events.
        """
        u = self.rng.randrange(self.users) if user is None else user
        if self.left[u] == 0:
            self.left[u] = self.rng.randint(2, 12)
            self.session[u] += 1
        self.left[u] -= 1
        item = self.items[min(bisect.bisect(self.cdf, self.rng.random()), len(self.items) - 1)]
        if prefix == "e":
            index = self.n
            self.n += 1
        else:
            index = self.prefilled
            self.prefilled += 1
        user = f"u{u}"
        document = {
            "event_id": f"{prefix}{index}",
            "user_id": user,
            "item_id": item,
            "ts": time.time(),
            "session_id": f"{user}-s{self.session[u]}",
        }
        return user.encode(), orjson.dumps(document), index


def local_broker(bootstrap: str):
    """The project's local broker at ``bootstrap`` (a LocalBroker), or None for another."""
    from stream_app.kafka_local import LocalBroker

    host, _, port = bootstrap.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        return None
    return LocalBroker(port=int(port))


def local_broker_pid(bootstrap: str) -> int | None:
    """The pid of the project's local broker at ``bootstrap`` (None for another broker)."""
    broker = local_broker(bootstrap)
    return broker.pid() if broker else None


def create_topics(bootstrap: str, prefix: str, partitions: int) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="rnnrec-bench")
    try:
        admin.create_topics(
            [NewTopic(f"{prefix}-{role}", num_partitions=partitions, replication_factor=1,
                      topic_configs=TOPIC_CONFIG) for role in ROLES]
        )  # fmt: skip
    finally:
        admin.close()


def delete_topics(bootstrap: str, prefix: str) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="rnnrec-bench")
    try:
        names = [t for t in admin.list_topics() if t.startswith(prefix)]
        if names:
            admin.delete_topics(names)
    finally:
        admin.close()


def state_write_bytes(bootstrap: str, topic: str, per_partition: int = 500) -> dict[str, float]:
    """Sizes of the last ``per_partition`` records of each changelog partition: the
    bytes every event writes (and the broker later compacts) once states are full."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, max_poll_records=5000)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not tps:
            return {}
        ends = consumer.end_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, max(0, ends[tp] - per_partition))
        sizes: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=500).values():
                sizes += [len(r.value) for r in records if r.value]  # not tombstones
    finally:
        consumer.close()
    if not sizes:
        return {}
    a = np.asarray(sizes, np.float64)
    return {"records": len(a), "mean": float(a.mean()), "p50": float(np.median(a)),
            "max": float(a.max())}  # fmt: skip


def cleanings(bootstrap: str, topic: str, since: float) -> list[dict[str, object]]:
    """The local broker's log-cleaner lines about ``topic`` since ``since`` (epoch s).

    ``stream_app/kafka/log4j2.xml`` keeps the cleaner at INFO. A cleaning swaps its
    segments in under the log's lock; lining these up with the slowest seconds shows
    whether compaction stalls output acknowledgements. Empty for another broker.
    """
    import calendar

    broker = local_broker(bootstrap)
    if broker is None or not broker.log_file.exists():
        return []
    path = broker.log_file
    found = []
    with open(path, errors="replace") as f:
        for line in f:
            if topic not in line or not line.startswith("[") or "lean" not in line:
                continue
            try:  # "[2026-12-06 14:06:52,123] INFO ..." in the broker's time zone (UTC here)
                stamp = time.strptime(line[1:20], "%Y-%m-%d %H:%M:%S")
            except ValueError:
                continue
            t = calendar.timegm(stamp) + int(line[21:24]) / 1000
            message = line[26:].partition(" ")[2]  # after the level
            if t >= since:
                found.append(
                    {"t": t, "utc": line[12:24].replace(",", "."), "line": message[:200].strip()}
                )
    return found


def wait_ready(port: int, proc: subprocess.Popen, log_path: Path, timeout_s: float = 300) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200 and orjson.loads(r.read()).get("ready"):
                    return time.monotonic() - started
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"worker not ready in {timeout_s:.0f} s; see {log_path}")


async def drive(args: argparse.Namespace, prefix: str, pid: int) -> dict[str, object]:
    """Produce at the target rate, read outputs, sample RSS; return the raw figures."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    duration = args.minutes * 60.0
    source = EventSource(args.users, vocabulary(args.model), seed=args.seed)
    rss: list[tuple[float, int]] = []
    probes: list[dict[str, float]] = []  # CPU and worker metrics every 5 s
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks=1, linger_ms=5)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap, group_id=None, enable_auto_commit=False
    )
    await producer.start()
    await consumer.start()
    topic = f"{prefix}-recommendations"
    # This run created the topic: its partitions are known (an unsubscribed aiokafka
    # consumer would only learn them at the next 5-minute metadata refresh).
    consumer.assign([TopicPartition(topic, p) for p in range(args.partitions)])
    await consumer.seek_to_beginning()
    producing = True

    prefill_outputs = 0

    async def read() -> None:
        nonlocal prefill_outputs
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for r in records:
                    event_id = orjson.loads(r.value)["event_id"]
                    if event_id[0] != "e":
                        prefill_outputs += 1
                        continue
                    i = int(event_id[1:])
                    if out_count[i] == 0:
                        out_ts[i] = r.timestamp
                    out_count[i] += 1

    async def sample() -> None:
        started = time.monotonic()
        while True:
            t = time.monotonic() - started
            rss.append((t, rss_bytes(pid)))
            figures = await asyncio.to_thread(scrape, args.web_port)
            figures.update(
                t=t, worker_cpu_s=cpu_seconds(pid), driver_cpu_s=cpu_seconds(os.getpid()),
                broker_cpu_s=cpu_seconds(args.broker_pid) if args.broker_pid else float("nan"),
            )  # fmt: skip
            probes.append(figures)
            await asyncio.sleep(5.0)

    def stamped(index: int):
        def done(future: asyncio.Future) -> None:
            if not future.exception():
                in_ts[index] = future.result().timestamp

        return done

    reader = asyncio.create_task(read())
    prefill: dict[str, float] = {}
    if args.prefill_events:
        prefill = await fill_states(args, source, producer, prefix, lambda: prefill_outputs, pid)
    capacity = prefill["full_state_drain_rate"] if args.capacity == "prefill" else args.capacity
    rate = capacity * args.fraction
    log(f"offering {rate:,.0f} events/s ({args.fraction:.0%} of {capacity:,.0f}) "
        f"for {args.minutes} min ...")  # fmt: skip
    # Allocated only now (the rate may come from the pre-fill): until then read() sees
    # nothing but pre-fill outputs, which never index these arrays.
    planned = int(rate * duration) + 1000
    in_ts = np.zeros(planned, np.int64)  # broker (log-append) time of each input, ms
    out_ts = np.zeros(planned, np.int64)  # broker time of its first recommendation, ms
    out_count = np.zeros(planned, np.int32)
    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    timed_start = time.time()
    last_report = started
    tick = 0.1
    try:
        while producing:
            elapsed = time.monotonic() - started
            if elapsed >= duration:
                break
            target = min(planned, int(rate * elapsed))
            while source.n < target:
                key, value, index = source.next()
                future = await producer.send(f"{prefix}-clickstream", key=key, value=value)
                future.add_done_callback(stamped(index))
            if time.monotonic() - last_report >= 60:
                answered = int((out_count[: source.n] > 0).sum())
                log(f"  {elapsed / 60:.1f} min: {source.n:,} produced, {answered:,} answered, "
                    f"RSS {rss[-1][1] / 2**20:,.0f} MiB, ETA {(duration - elapsed) / 60:.1f} min")  # fmt: skip
                last_report = time.monotonic()
            await asyncio.sleep(max(0.0, tick - (time.monotonic() - started - elapsed)))
        log("  flushing the producer ...")
        await producer.flush()
        produced = source.n
        answered = int((out_count[:produced] > 0).sum())
        log(f"  {elapsed / 60:.1f} min: {produced:,} produced, {answered:,} answered")
        log(f"  produced {produced:,} events; waiting for the last outputs ...")
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline and (out_count[:produced] == 0).any():
            await asyncio.sleep(1.0)
        await asyncio.sleep(2.0)  # duplicates would arrive right behind
    finally:
        reader.cancel()
        sampler.cancel()
        await producer.stop()
        await consumer.stop()
    return {
        "produced": produced,
        "in_ts": in_ts[:produced],
        "out_ts": out_ts[:produced],
        "out_count": out_count[:produced],
        "rss": rss,
        "probes": probes,
        "rate": rate,
        "capacity": capacity,
        "prefill": prefill,
        "timed_start": timed_start,
    }


async def fill_states(
    args: argparse.Namespace, source: EventSource, producer, prefix: str, answered, pid: int
) -> dict[str, float]:
    """Bring every user's state to its steady size before the timed run.

    A user's state grows with each event until it holds the last L events
    (``RNNREC_HISTORY_LENGTH``, 50 by default); a soak whose users start empty
    measures that filling as memory growth. Here each user gets ``--prefill-events``
    events, round-robin in sessions as in the run, as fast as the worker drains them;
    the timed run starts once every one has its recommendation.
    """
    total = args.users * args.prefill_events
    log(f"pre-filling: {args.prefill_events} events for each of {args.users:,} users "
        f"({total:,} events) ...")  # fmt: skip
    # Round-robin: once users x L events are answered every state holds its last L
    # events, and the rest of the pre-fill is a drain of a pre-loaded topic at full
    # state size: the capacity that matters for the timed run.
    full_after = args.users * min(args.prefill_events, args.history_length)
    full_at: tuple[float, int] | None = None
    started = time.monotonic()
    for _ in range(args.prefill_events):
        for user in range(args.users):
            key, value, _index = source.next(user, prefix="w")
            await producer.send(f"{prefix}-clickstream", key=key, value=value)
    await producer.flush()
    last = time.monotonic()
    while answered() < total:
        if time.monotonic() - started > args.prefill_timeout:
            raise RuntimeError(f"pre-fill: {answered():,} of {total:,} answered in "
                               f"{args.prefill_timeout:.0f} s")  # fmt: skip
        await asyncio.sleep(1.0)
        if full_at is None and answered() >= full_after:
            full_at = (time.monotonic(), answered())
        if time.monotonic() - last >= 30:
            done, took = answered(), time.monotonic() - started
            rate = done / took
            eta = (total - done) / rate if rate else float("inf")
            log(f"  pre-fill: {done:,}/{total:,} answered, {rate:,.0f} events/s, "
                f"RSS {rss_bytes(pid) / 2**20:,.0f} MiB, ETA {eta / 60:.1f} min")  # fmt: skip
            last = time.monotonic()
    ended = time.monotonic()
    took = ended - started
    full_rate = float("nan")
    if full_at is not None and total - full_at[1] >= args.users:
        full_rate = (total - full_at[1]) / max(ended - full_at[0], 1e-9)
    log(f"pre-fill done: {total:,} events in {took / 60:.1f} min "
        f"({total / took:,.0f} events/s; {full_rate:,.0f} events/s once states were full); "
        f"RSS {rss_bytes(pid) / 2**20:,.0f} MiB")  # fmt: skip
    return {"events": total, "per_user": args.prefill_events, "seconds": round(took, 1),
            "full_state_drain_rate": round(full_rate, 1),
            "full_state_events": total - full_at[1] if full_at else 0,
            "rss_mib_after": round(rss_bytes(pid) / 2**20, 1)}  # fmt: skip


_SCRAPED = {
    "rnnrec_batch_size_sum": "batched_events",
    "rnnrec_batch_size_count": "batches",
    "rnnrec_step_seconds_sum": "step_s",
    "rnnrec_step_seconds_count": "steps",
    "python_gc_collections_total": "gc",
}


def scrape(port: int) -> dict[str, float]:
    """The worker's batch, step and GC counters from its ``/metrics`` (empty on error)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = _SCRAPED.get(sample.name)
            if name == "gc":
                name = f"gc{sample.labels.get('generation')}"
            if name:
                out[name] = sample.value
    return out


def per_minute_resources(probes: list[dict[str, float]]) -> list[dict[str, float]]:
    """CPU shares and worker counters per minute of the run, from the 5 s probes."""
    rows = []
    for m in range(int(max((p["t"] for p in probes), default=0) // 60) + 1):
        inside = [p for p in probes if m * 60 <= p["t"] <= (m + 1) * 60 + 0.5]
        if len(inside) < 2:
            continue
        a, b = inside[0], inside[-1]
        dt = b["t"] - a["t"]

        def delta(key: str, a=a, b=b) -> float:
            return float(b.get(key, float("nan")) - a.get(key, float("nan")))

        batches, steps = delta("batches"), delta("steps")
        rows.append({
            "minute": m + 1,
            "worker_cpu_pct": round(100 * delta("worker_cpu_s") / dt, 1),
            "broker_cpu_pct": round(100 * delta("broker_cpu_s") / dt, 1),
            "driver_cpu_pct": round(100 * delta("driver_cpu_s") / dt, 1),
            "mean_batch": round(delta("batched_events") / batches, 1) if batches else None,
            "mean_step_ms": round(1000 * delta("step_s") / steps, 1) if steps else None,
            "gc2_passes": delta("gc2"),
        })  # fmt: skip
    return rows


def summarise(raw: dict[str, object]) -> dict[str, object]:
    in_ts, out_ts, counts = raw["in_ts"], raw["out_ts"], raw["out_count"]
    answered = counts > 0
    t0 = int(in_ts[in_ts > 0].min())
    minute = (in_ts - t0) // 60_000
    per_minute = []
    for m in range(int(minute.max()) + 1):
        sel = (minute == m) & answered & (in_ts > 0)
        lat = (out_ts[sel] - in_ts[sel]).astype(np.float64)
        produced = int((minute == m).sum())
        row = {"minute": m + 1, "produced": produced, "answered": int(sel.sum())}
        if len(lat):
            row.update(
                p50_ms=float(np.percentile(lat, 50)), p95_ms=float(np.percentile(lat, 95)),
                p99_ms=float(np.percentile(lat, 99)), max_ms=float(lat.max()),
            )  # fmt: skip
        per_minute.append(row)
    # The slowest seconds, by broker time of the input, to line stalls up with logs.
    sel = answered & (in_ts > 0)
    second = in_ts[sel] // 1000
    lat_all = out_ts[sel] - in_ts[sel]
    order = np.argsort(second, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(second[order]) != 0])
    worst_per_second = np.maximum.reduceat(lat_all[order], starts) if len(order) else []
    slowest = sorted(zip(worst_per_second, second[order][starts], strict=True), reverse=True)[:20]
    rss = raw["rss"]
    t = np.array([x for x, _ in rss])
    r = np.array([y for _, y in rss], np.float64) / 2**20
    steady = t >= min(120.0, t.max() / 2)  # skip warm-up (JIT, buffers, first users)
    slope = float(np.polyfit(t[steady] / 60, r[steady], 1)[0]) if steady.sum() > 2 else None
    return {
        "produced": int(raw["produced"]),
        "missing": int((~answered).sum()),
        "duplicated_outputs": int((counts[answered] - 1).sum()),
        "offered_rate": raw["rate"],
        "per_minute": per_minute,
        "rss_mib": {
            "first": round(float(r[0]), 1),
            "max": round(float(r.max()), 1),
            "last": round(float(r[-1]), 1),
            "slope_mib_per_min_after_warmup": None if slope is None else round(slope, 2),
        },
        "rss_trace": [(round(float(a), 1), round(float(b), 1)) for a, b in zip(t, r, strict=True)],
        "resources_per_minute": per_minute_resources(raw["probes"]),
        "slowest_seconds": [
            {"utc": time.strftime("%H:%M:%S", time.gmtime(int(sec))), "max_ms": int(ms)}
            for ms, sec in slowest
        ],
    }


def write(report: dict[str, object], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=1))
    s, m = report["summary"], report["machine"]
    lines = [
        "# Soak: fixed offered rate, RSS and latency over time",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {m['cpus']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB, {m['platform']}, "
        f"Python {m['python']}, Faust {m['faust']}; load at start {m['loadavg_at_start']}  ",
        f"Model: {report['model']}; offered {s['offered_rate']:,.0f} events/s "
        f"({report['fraction']:.0%} of the capacity {report['capacity']:,.0f}"
        f"{' measured by the pre-fill' if report['capacity_from_prefill'] else ''}); "
        f"{report['users']:,} users; worker ready {report['ready_s']:.1f} s after start",
        "",
    ]
    if report.get("prefill"):
        p = report["prefill"]
        lines += [
            f"Pre-filled before the timed run: {p['per_user']} events per user ({p['events']:,} "
            f"events in {p['seconds'] / 60:.1f} min; the last {p['full_state_events']:,} "
            f"with every state full drained at {p['full_state_drain_rate']:,.0f}"
            f" events/s); RSS after it {p['rss_mib_after']} MiB.",
            "",
        ]
    lines += [
        f"Produced {s['produced']:,}; **missing outputs {s['missing']}**; duplicated outputs "
        f"{s['duplicated_outputs']}. RSS first {s['rss_mib']['first']} MiB, max "
        f"{s['rss_mib']['max']} MiB, last {s['rss_mib']['last']} MiB, slope after warm-up "
        f"{s['rss_mib']['slope_mib_per_min_after_warmup']} MiB/min.",
        "",
        "| minute | produced | answered | p50 ms | p95 ms | p99 ms | max ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in s["per_minute"]:
        lines.append(
            f"| {row['minute']} | {row['produced']:,} | {row['answered']:,} | "
            f"{row.get('p50_ms', float('nan')):.0f} | {row.get('p95_ms', float('nan')):.0f} | "
            f"{row.get('p99_ms', float('nan')):.0f} | {row.get('max_ms', float('nan')):.0f} |"
        )
    slowest = s.get("slowest_seconds", [])[:10]
    if slowest:
        lines += ["", "Slowest seconds (UTC of the input, worst latency): "
                  + ", ".join(f"{x['utc']} {x['max_ms']:,} ms" for x in slowest) + "."]  # fmt: skip
    sizes = report.get("state_write_bytes") or {}
    if sizes:
        lines += ["", f"State write size (last {sizes['records']:,} changelog records): mean "
                  f"{sizes['mean']:,.0f} B, median {sizes['p50']:,.0f} B, max {sizes['max']:,.0f} B."]  # fmt: skip
    if "cleanings" in report:
        # The swap is the moment the cleaned segment replaces the old ones (log lock).
        found = report["cleanings"]
        begun = sum("Beginning cleaning" in c["line"] for c in found)
        swaps = sorted({c["utc"][:8] for c in found if "Swapping in cleaned segment" in c["line"]})
        lines += ["", f"Changelog cleanings by the local broker during the timed run (its log): "
                  f"{begun}, swapping segments in at " + (", ".join(swaps) or "-") + "."]  # fmt: skip
    lines += [
        "",
        "CPU per minute (100 % = one core of the 2) and the worker's own counters:",
        "",
        "| minute | worker CPU % | broker CPU % | driver CPU % | mean batch | mean step ms "
        "| GC gen-2 passes |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in s["resources_per_minute"]:
        lines.append(
            f"| {row['minute']} | {row['worker_cpu_pct']} | {row['broker_cpu_pct']} | "
            f"{row['driver_cpu_pct']} | {row['mean_batch']} | {row['mean_step_ms']} | "
            f"{row['gc2_passes']:.0f} |"
        )
    (out / "soak.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4))
    t, r = zip(*s["rss_trace"], strict=True)
    ax1.plot(np.array(t) / 60, r)
    ax1.set_xlabel("minutes")
    ax1.set_ylabel("worker RSS (MiB)")
    ax1.set_ylim(bottom=0)
    ax1.grid(alpha=0.3)
    rows = [row for row in s["per_minute"] if "p50_ms" in row]
    for name in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        ax2.plot([row["minute"] for row in rows], [row[name] for row in rows], "o-", label=name)
    ax2.set_xlabel("minute")
    ax2.set_ylabel("latency, input to output broker time (ms)")
    ax2.set_yscale("log")
    ax2.legend()
    ax2.grid(alpha=0.3)
    res = s["resources_per_minute"]
    for name in ("worker_cpu_pct", "broker_cpu_pct", "driver_cpu_pct"):
        ax3.plot([row["minute"] for row in res], [row[name] for row in res], "o-",
                 label=name.split("_")[0])  # fmt: skip
    ax3.set_xlabel("minute")
    ax3.set_ylabel("CPU % (100 = one core)")
    ax3.set_ylim(bottom=0)
    ax3.legend()
    ax3.grid(alpha=0.3)
    fig.suptitle(f"Soak at {s['offered_rate']:,.0f} events/s for {report['minutes']} min")
    fig.tight_layout()
    fig.savefig(out / "soak.png", dpi=110)
    log(f"wrote {out / 'soak.json'}, soak.md, soak.png")


def _capacity(text: str) -> float | str:
    if text == "prefill":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate or 'prefill': {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument(
        "--capacity",
        type=_capacity,
        required=True,
        help="Measured events/s, or 'prefill': the pre-fill's drain rate once every state "
        "was full (needs --prefill-events above the history length).",
    )
    parser.add_argument("--fraction", type=float, default=0.5, help="Of the capacity.")
    parser.add_argument("--users", type=int, default=20_000, help="User population.")
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL if DEFAULT_MODEL.exists() else None
    )
    parser.add_argument(
        "--scorer-factory", help="Serve this 'module:callable' instead of a model (dry runs)."
    )
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    )
    parser.add_argument(
        "--prefill-events",
        type=int,
        default=0,
        help="Events per user before the timed run (50 = RNNREC_HISTORY_LENGTH: every "
        "user's state starts at its steady size).",
    )
    parser.add_argument("--prefill-timeout", type=float, default=3600.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from stream_app.settings import load_settings

    # What the worker will read from the same environment.
    args.history_length = load_settings().history_length
    if args.capacity == "prefill" and args.prefill_events <= args.history_length:
        parser.error(
            f"--capacity prefill needs --prefill-events above the history length "
            f"({args.history_length}): the rounds after it measure the drain rate"
        )
    if args.model is None and not args.scorer_factory:
        parser.error(
            "no model: pass --model CHECKPOINT (bench/bench_serving.py trains "
            "artifacts/bench/model-1pct) or --scorer-factory"
        )
    if args.scorer_factory:
        args.model = None
    args.broker_pid = local_broker_pid(args.bootstrap)

    prefix = f"bench-soak-{uuid.uuid4().hex[:8]}"
    create_topics(args.bootstrap, prefix, args.partitions)
    port = args.web_port = free_port()
    work = Path(tempfile.mkdtemp(prefix="rnnrec-soak-"))
    log_path = work / "worker.log"
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        KAFKA_BOOTSTRAP_SERVERS=args.bootstrap,
        RNNREC_TOPIC_PREFIX=f"{prefix}-",
        RNNREC_APP_ID=f"{prefix}-app",
        RNNREC_PARTITIONS=str(args.partitions),
        RNNREC_DATA_DIR=str(work / "data"),
        RNNREC_WEB_PORT=str(port),
        RNNREC_MAX_BATCH=str(args.max_batch),
    )
    if args.scorer_factory:
        env["RNNREC_SCORER_FACTORY"] = args.scorer_factory
    else:
        env["RNNREC_MODEL_SOURCE"] = str(args.model)
    report: dict[str, object] = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "machine": machine(),
        "model": str(args.model or args.scorer_factory),
        "minutes": args.minutes,
        "capacity": args.capacity,
        "capacity_from_prefill": args.capacity == "prefill",
        "fraction": args.fraction,
        "users": args.users,
        "prefill_events_per_user": args.prefill_events,
        "partitions": args.partitions,
        "max_batch": args.max_batch,
    }
    cmd = [sys.executable, "-m", "stream_app.cli", "worker", "-l", "warning"]
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        report["ready_s"] = wait_ready(port, proc, log_path)
        log(f"worker ready in {report['ready_s']:.1f} s")
        raw = asyncio.run(drive(args, prefix, proc.pid))
        report["capacity"] = round(raw["capacity"], 1)
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited {proc.returncode} during the soak; see {log_path}")
        report["summary"] = summarise(raw)
        report["prefill"] = raw["prefill"]
        changelog = f"{prefix}-app-user-state-changelog"
        report["state_write_bytes"] = state_write_bytes(args.bootstrap, changelog)
        report["cleanings"] = cleanings(args.bootstrap, changelog, raw["timed_start"])
    finally:
        log("stopping the worker ...")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        delete_topics(args.bootstrap, prefix)
    s = report["summary"]
    log(
        f"produced {s['produced']:,}, missing {s['missing']}, duplicated {s['duplicated_outputs']}; "
        f"RSS {s['rss_mib']}; last minute "
        f"{ {k: round(v) for k, v in s['per_minute'][-1].items() if k.endswith('_ms')} }"
    )
    write(report, args.out)


if __name__ == "__main__":
    main()
