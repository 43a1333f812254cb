"""End-to-end serving benchmark: drain rate, latency and state size of the Faust worker.

Measured as /work/shared/DESIGN.md ("Measuring") defines it, against the local broker
(``KAFKA_BOOTSTRAP_SERVERS``, default 127.0.0.1:19092) with every topic created with
6 partitions and ``message.timestamp.type=LogAppendTime``:

* **Drain rate.** N events (real yoochoose-1pct test + validation events, repeated with
  fresh user and event ids until N) are pre-loaded onto a fresh input topic; each
  variant's worker process (its own consumer group and output topics) then drains it.
  Rate = (outputs - 1) / (last output's broker time - first output's broker time) on
  the recommendations topic: process start-up and JIT warm-up are excluded, every
  event's output is acknowledged by the broker. The no-op baseline
  (``bench/noop_app.py``: same Faust settings and take() batching, orjson decode, one
  similar-size output per event, no state, no model) drains the same topic.
* **Latency.** A fresh worker (each variant named by ``--latency-variant``) on fresh
  topics; after it is ready, events are produced at fixed rates (``--latency-rates``,
  else half the first latency variant's measured drain rate, then ``--low-rate``);
  latency = output broker time - input broker time, matched by event id. With two
  variants and fixed rates, before/after latency at the same offered load.
* **State.** Bytes of the encoded state (``stream_app.state.encode_state``) of users
  after the drain (read back from the changelog topic), and the worker's RSS growth
  per 10k users over the drain.

The ``*-default-256`` variants serve the default model config (attention readout)
trained on yoochoose-1pct ``train_full``; the first run that names one trains it (about
2 minutes) into ``artifacts/bench/model-1pct-default``.

``--baseline-src DIR`` runs the ``base-*`` variants from another source tree (a copy of
the code before a change) with the same interpreter, so before/after come from one run.
Writes serving.{json,md} and serving_latency.png to ``--out`` (default bench/results).
Figures only.

    .venv/bin/python bench/bench_serving.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "results"
ART = ROOT / "artifacts" / "bench"
SPLIT = Path("/work/shared/data/yoochoose-1pct/split")
SYNTH_CAPACITY = 100_352
PARTITIONS = 6
TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}

# name: (app, model, env overrides, source tree: "new" or "base")
VARIANTS: dict[str, tuple[str, str, dict[str, str], str]] = {
    "noop-256": ("noop", "", {"RNNREC_MAX_BATCH": "256"}, "new"),
    "noop-1024": ("noop", "", {"RNNREC_MAX_BATCH": "1024"}, "new"),
    # The no-op before 2026-12-08: a 644-byte output (the worker's is 1,464 with
    # explanations), for comparison with earlier runs; never a variant's baseline.
    "noop-unpadded-256": (
        "noop", "", {"RNNREC_MAX_BATCH": "256", "RNNREC_NOOP_OUTPUT_BYTES": "0"}, "new",
    ),
    "base-noop-256": ("noop", "", {"RNNREC_MAX_BATCH": "256"}, "base"),
    "base-explain-256": ("worker", "1pct", {"RNNREC_MAX_BATCH": "256"}, "base"),
    "base-noexplain-256": (
        "worker", "1pct", {"RNNREC_MAX_BATCH": "256", "RNNREC_EXPLAIN_WINDOW": "0"}, "base",
    ),
    "worker-explain-256": ("worker", "1pct", {"RNNREC_MAX_BATCH": "256"}, "new"),
    "worker-explain-wait10-256": (
        "worker", "1pct", {"RNNREC_MAX_BATCH": "256", "RNNREC_MAX_WAIT_S": "0.01"}, "new",
    ),
    "worker-noexplain-256": (
        "worker", "1pct", {"RNNREC_MAX_BATCH": "256", "RNNREC_EXPLAIN_WINDOW": "0"}, "new",
    ),
    # Largest bucket 256 = max_batch: a 129- to 256-row round is not padded to 512.
    "worker-explain-b256-256": (
        "worker", "1pct", {"RNNREC_MAX_BATCH": "256", "RNNREC_BUCKET_SIZES": "8,32,128,256"},
        "new",
    ),
    "worker-noexplain-b256-256": (
        "worker", "1pct",
        {"RNNREC_MAX_BATCH": "256", "RNNREC_BUCKET_SIZES": "8,32,128,256",
         "RNNREC_EXPLAIN_WINDOW": "0"}, "new",
    ),
    "worker-explain-1024": (
        "worker", "1pct",
        {"RNNREC_MAX_BATCH": "1024", "RNNREC_BUCKET_SIZES": "8,32,128,512,1024"}, "new",
    ),
    "worker-noexplain-1024": (
        "worker", "1pct",
        {"RNNREC_MAX_BATCH": "1024", "RNNREC_BUCKET_SIZES": "8,32,128,512,1024",
         "RNNREC_EXPLAIN_WINDOW": "0"}, "new",
    ),
    # The batch wait (stream.take within) at 10, 20 (the default) and 50 ms (the default
    # before 2026-12-07): latency at rates where batches close on the timer.
    "worker-explain-w10-256": (
        "worker", "1pct", {"RNNREC_MAX_BATCH": "256", "RNNREC_MAX_WAIT_S": "0.01"}, "new",
    ),
    "worker-explain-w20-256": (
        "worker", "1pct", {"RNNREC_MAX_BATCH": "256", "RNNREC_MAX_WAIT_S": "0.02"}, "new",
    ),
    "worker-explain-w50-256": (
        "worker", "1pct", {"RNNREC_MAX_BATCH": "256", "RNNREC_MAX_WAIT_S": "0.05"}, "new",
    ),
    # The default model config (128 units, attention readout) on the real catalogue.
    "base-explain-default-256": ("worker", "default", {"RNNREC_MAX_BATCH": "256"}, "base"),
    "worker-explain-default-256": ("worker", "default", {"RNNREC_MAX_BATCH": "256"}, "new"),
    "worker-noexplain-default-256": (
        "worker", "default", {"RNNREC_MAX_BATCH": "256", "RNNREC_EXPLAIN_WINDOW": "0"}, "new",
    ),
    "base-noexplain-default-256": (
        "worker", "default", {"RNNREC_MAX_BATCH": "256", "RNNREC_EXPLAIN_WINDOW": "0"}, "base",
    ),
    # The default model with its carry stored in float16 (half of its 14 kB state).
    "worker-explain-default-f16-256": (
        "worker", "default", {"RNNREC_MAX_BATCH": "256", "RNNREC_CARRY_DTYPE": "float16"},
        "new",
    ),
    "worker100k-explain-256": ("worker", "100k", {"RNNREC_MAX_BATCH": "256"}, "new"),
    "worker100k-noexplain-256": (
        "worker", "100k", {"RNNREC_MAX_BATCH": "256", "RNNREC_EXPLAIN_WINDOW": "0"}, "new",
    ),
    "worker2-explain-256": ("worker", "1pct", {"RNNREC_MAX_BATCH": "256"}, "new"),
    "worker2-noexplain-256": (
        "worker", "1pct", {"RNNREC_MAX_BATCH": "256", "RNNREC_EXPLAIN_WINDOW": "0"}, "new",
    ),
}  # fmt: skip
# The same with glibc backing malloc by transparent huge pages: XLA's per-call
# temporaries (a 256 x 100k score buffer is 100 MB) then fault in by 2 MB, not 4 kB.
HUGE_PAGES = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
for _name in (
    "noop-256", "worker-explain-256", "worker-noexplain-256",
    "worker100k-explain-256", "worker100k-noexplain-256",
):  # fmt: skip
    _app, _model, _env, _src = VARIANTS[_name]
    VARIANTS[f"{_name}-hugetlb"] = (_app, _model, {**_env, **HUGE_PAGES}, _src)
# The same on the standard library's event loop (the default is uvloop since 2026-12-07).
ASYNCIO_LOOP = {"RNNREC_EVENT_LOOP": "asyncio"}
for _name in ("noop-256", "worker-explain-256", "worker-noexplain-256"):
    _app, _model, _env, _src = VARIANTS[_name]
    VARIANTS[f"{_name}-asyncio"] = (_app, _model, {**_env, **ASYNCIO_LOOP}, _src)
# Variants drained by several worker processes in one consumer group (default 1): one
# worker's event loop is a single Python thread, so a second process on the same
# machine shows how much of the rest of the machine the partitions can use.
PROCESSES = {"worker2-explain-256": 2, "worker2-noexplain-256": 2}
DEFAULT_VARIANTS = (
    "noop-256,noop-1024,base-explain-256,worker-explain-256,worker-noexplain-256,"
    "worker-explain-1024,worker-noexplain-1024,worker100k-explain-256"
)


def log(msg: str) -> None:
    print(msg, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
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
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------ models


def train_model(python: str, config: str, out: Path) -> None:
    """`rnnrec train --config CONFIG` on yoochoose-1pct ``train_full`` into ``out``."""
    subprocess.run(
        [python, "-m", "stream_app.cli", "train", "--config", config,
         "--train", str(SPLIT / "train_full.tsv"), "--out", str(out)],
        check=True, cwd=ROOT,
    )  # fmt: skip


def ensure_models(python: str, wanted: set[str]) -> dict[str, Path]:
    """The real-catalogue model (trained once, cached) and the 100k-item model; the
    default-config model (attention readout, trained once) only when a variant uses it."""
    real = ART / "model-1pct"
    if not (real / "LATEST").exists():
        log("training the yoochoose-1pct model (tiny config, capacity 6400, 2 epochs) ...")
        train_model(python, str(ROOT / "bench" / "serving_model_config.py"), real)
    synth = ART / "model-100k"
    if not (synth / "LATEST").exists():
        log("writing the 100k-item model (untrained params, tiny config) ...")
        import jax

        from rnnrec_jax import models
        from rnnrec_jax.model_io import load_trained_model, save_trained_model

        trained = load_trained_model(real)
        cfg = dataclasses.replace(trained.model_cfg, item_capacity=SYNTH_CAPACITY)
        params = models.init_params(cfg, jax.random.PRNGKey(0))
        # Real item ids first (the replayed events hit known items), then synthetic ids.
        ids = [str(x) for x in trained.vocab.decode(np.arange(1, len(trained.vocab) + 1))]
        ids += [f"s{i}" for i in range(SYNTH_CAPACITY - 1 - len(ids))]
        vocab = {item: i + 1 for i, item in enumerate(ids)}
        save_trained_model(synth, params, cfg, vocab, version="100k")
    found = {"1pct": real, "100k": synth}
    if "default" in wanted:
        found["default"] = default = ART / "model-1pct-default"
        if not (default / "LATEST").exists():
            log("training the yoochoose-1pct model with the default config (about 2 min) ...")
            train_model(python, "default", default)
    return found


# ------------------------------------------------------------------------ events


def make_events(n: int, tag: str = "") -> list[tuple[bytes, bytes, str]]:
    """``(key, value, event_id)``: test + validation events, repeated with fresh ids."""
    from rnnrec_jax.data import read_split_tsv
    from stream_app.tools_replay import clickstream_records

    base = []
    for name in ("test.tsv", "train_valid.tsv"):
        for _, _, value in clickstream_records(read_split_tsv(SPLIT / name)):
            base.append(orjson.loads(value))
    out: list[tuple[bytes, bytes, str]] = []
    rep = 0
    while len(out) < n:
        for doc in base:
            if len(out) >= n:
                break
            d = dict(
                doc,
                user_id=f"{tag}{doc['user_id']}~{rep}",
                event_id=f"{tag}{doc['event_id']}~{rep}",  # pools never share ids
            )
            d["session_id"] = f"{doc['session_id']}~{rep}"
            out.append((d["user_id"].encode(), orjson.dumps(d), d["event_id"]))
        rep += 1
    return out


def producer(bootstrap: str):
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024,
        max_in_flight_requests_per_connection=1,
    )  # fmt: skip


def produce_all(bootstrap: str, topic: str, events: list[tuple[bytes, bytes, str]]) -> None:
    prod = producer(bootstrap)
    try:
        for i, (key, value, _) in enumerate(events):
            prod.send(topic, key=key, value=value)
            if i % 20000 == 0:
                log(f"  produced {i:,}/{len(events):,}")
        prod.flush()
    finally:
        prod.close()


def produce_at_rate(
    bootstrap: str, topic: str, events: list[tuple[bytes, bytes, str]], rate: float
) -> float:
    """Send at ``rate`` events/s (in 10 ms ticks); returns the achieved rate."""
    prod = producer(bootstrap)
    prod._sender.config["linger_ms"] = 5
    started = time.monotonic()
    try:
        sent = 0
        while sent < len(events):
            due = int((time.monotonic() - started) * rate) + 1
            while sent < min(due, len(events)):
                key, value, _ = events[sent]
                prod.send(topic, key=key, value=value)
                sent += 1
            time.sleep(0.005)
        prod.flush()
    finally:
        prod.close()
    return len(events) / max(1e-9, time.monotonic() - started)


def create(bootstrap: str, names: list[str]) -> None:
    from stream_app.kafka_io import create_topics

    create_topics(bootstrap, names, partitions=PARTITIONS, configs=TOPIC_CONFIG)


def end_count(consumer, topic: str) -> int:
    from kafka import TopicPartition

    parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in parts]
    return int(sum(consumer.end_offsets(tps).values())) if tps else 0


def read_topic(bootstrap: str, topic: str, want_ids: bool) -> tuple[np.ndarray, list, list]:
    """(broker timestamps ms, event ids or [], value sizes) of every record of a topic."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        max_poll_records=5000, fetch_max_bytes=64 << 20,
    )  # fmt: skip
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        total = sum(ends.values())
        ts, ids, sizes = [], [], []
        deadline = time.monotonic() + 120
        while len(ts) < total and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    ts.append(r.timestamp)
                    sizes.append(len(r.value or b""))
                    if want_ids:
                        ids.append(orjson.loads(r.value).get("event_id"))
        return np.asarray(ts, np.int64), ids, sizes
    finally:
        consumer.close()


# ------------------------------------------------------------------------ processes


@dataclasses.dataclass
class Proc:
    popen: subprocess.Popen
    port: int
    log_path: Path

    def rss(self) -> int:
        try:
            import psutil

            return int(psutil.Process(self.popen.pid).memory_info().rss)
        except Exception:
            return 0

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process so far (all its threads)."""
        try:
            import psutil

            times = psutil.Process(self.popen.pid).cpu_times()
            return float(times.user + times.system)
        except Exception:
            return float("nan")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def tail(self) -> str:
        try:
            return self.log_path.read_text()[-3000:]
        except OSError:
            return ""


def start(
    python: str, app: str, model: Path | None, env_extra: dict[str, str], topics: dict[str, str],
    app_id: str, bootstrap: str, src: Path, workdir: Path, instance: str = "",
) -> Proc:  # fmt: skip
    port = free_port()
    name = f"{app_id}{instance}"  # one data dir and log per process
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "RNNREC_TOPIC_PREFIX": "",
        "RNNREC_TOPIC_CLICKSTREAM": topics["in"],
        "RNNREC_TOPIC_RECOMMENDATIONS": topics["rec"],
        "RNNREC_TOPIC_PURCHASE_PREDICTIONS": topics["pp"],
        "RNNREC_TOPIC_DLQ": topics["dlq"],
        "RNNREC_TOPIC_CLICKSTREAM_REPARTITION": topics["in"] + "-rk",
        "RNNREC_TOPIC_MODEL_UPDATES": topics["in"] + "-mu",
        "RNNREC_TOPIC_ITEM_UPDATES": topics["in"] + "-iu",
        "RNNREC_APP_ID": app_id,
        "RNNREC_PARTITIONS": str(PARTITIONS),
        "RNNREC_WEB_PORT": str(port),
        "RNNREC_DATA_DIR": str(workdir / name),
        **env_extra,
    }
    if model is not None:
        env["RNNREC_MODEL_SOURCE"] = str(model)
    if app == "noop":
        args = [python, str(src / "bench" / "noop_app.py")]
        if not (src / "bench" / "noop_app.py").exists():
            args = [python, str(ROOT / "bench" / "noop_app.py")]
    else:
        args = [python, "-m", "stream_app.cli", "worker", "-l", "warn"]
    log_path = workdir / f"{name}.log"
    popen = subprocess.Popen(
        args, cwd=src, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return Proc(popen, port, log_path)


def wait_ready(proc: Proc, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"worker exited early:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/ready", timeout=1) as r:
                if r.status == 200 and orjson.loads(r.read()).get("ready"):
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"worker not ready in {timeout_s}s:\n{proc.tail()}")


def wait_outputs(
    proc: Proc, bootstrap: str, topic: str, n: int, label: str, timeout_s: float,
    others: Sequence[Proc] = (),
):  # fmt: skip
    """Poll the output topic's end offsets until ``n``; samples (count, rss, time, CPU
    seconds of ``proc`` and ``others``) on the way."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    samples = []
    started = time.monotonic()
    last_log = 0.0
    try:
        while True:
            count = end_count(consumer, topic)
            cpu = sum(p.cpu_s() for p in (proc, *others))
            samples.append((count, proc.rss(), time.monotonic(), cpu))
            now = time.monotonic()
            if count >= n:
                log(f"  [{label}] {count:,}/{n:,} outputs ({now - started:.0f}s)")
                return samples
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{label}: process exited:\n{proc.tail()}")
            if now - started > timeout_s:
                raise RuntimeError(f"{label}: {count}/{n} outputs after {timeout_s}s")
            if now - last_log > 5:
                rate = (samples[-1][0] - samples[0][0]) / max(1e-9, now - started)
                log(f"  [{label}] {count:,}/{n:,} outputs ({now - started:.0f}s, ~{rate:,.0f}/s)")
                last_log = now
            time.sleep(0.25)
    finally:
        consumer.close()


def state_sizes(bootstrap: str, app_id: str) -> dict:
    """Encoded state bytes per user: the last value of each key in the changelog."""
    from kafka import KafkaConsumer, TopicPartition

    topic = f"{app_id}-user-state-changelog"
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, max_poll_records=5000)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not tps:
            return {}
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        total = sum(consumer.end_offsets(tps).values())
        last: dict[bytes, int] = {}
        seen = 0
        deadline = time.monotonic() + 60
        while seen < total and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    seen += 1
                    last[r.key] = len(r.value or b"")
        sizes = np.asarray(list(last.values()), np.float64)
        return {
            "users": len(last),
            "bytes_per_user_mean": float(sizes.mean()),
            "bytes_per_user_p50": float(np.median(sizes)),
            "bytes_per_user_max": float(sizes.max()),
        }
    finally:
        consumer.close()


# ------------------------------------------------------------------------ phases


def drain_variant(name: str, ctx: dict, round_no: int = 0) -> dict:
    app, model_key, env_extra, tree = VARIANTS[name]
    src = ctx["base_src"] if tree == "base" else ROOT
    # Each round has its own consumer group and output topics.
    tag = ctx["tag"] if round_no == 0 else f"{ctx['tag']}-r{round_no}"
    topics = {
        "in": ctx["input_topic"],
        "rec": f"{tag}-{name}-rec",
        "pp": f"{tag}-{name}-pp",
        "dlq": f"{tag}-{name}-dlq",
    }
    create(ctx["bootstrap"], [topics["rec"], topics["pp"], topics["dlq"]])
    app_id = f"{tag}-{name}"
    model = ctx["models"][model_key] if model_key else None
    log(f"[{name}] starting ({app}, {src}) load {loadavg()}")
    t0 = time.monotonic()
    n_procs = PROCESSES.get(name, 1)
    procs = []
    for i in range(n_procs):
        instance = f"-{i}" if n_procs > 1 else ""
        proc = start(
            ctx["python"], app, model, env_extra, topics, app_id, ctx["bootstrap"], src,
            ctx["workdir"], instance,
        )  # fmt: skip
        procs.append(proc)
    try:
        samples = wait_outputs(
            procs[0], ctx["bootstrap"], topics["rec"], ctx["n"], name, 400, procs[1:]
        )
    finally:
        for proc in procs:
            proc.stop()
    wall = time.monotonic() - t0
    ts, _, sizes = read_topic(ctx["bootstrap"], topics["rec"], want_ids=False)
    ts = np.sort(ts)
    span_s = (ts[-1] - ts[0]) / 1e3
    rate = (len(ts) - 1) / span_s if span_s > 0 else float("nan")
    result = {
        "variant": name,
        "app": app,
        "model": model_key or None,
        "source": str(src),
        "env": env_extra,
        "events": ctx["n"],
        "outputs": len(ts),
        "drain_span_s": span_s,
        "events_per_s": rate,
        "output_bytes_mean": float(np.mean(sizes)),
        "wall_s_with_startup": wall,
        "load_after": loadavg(),
    }
    if n_procs > 1:
        result["processes"] = n_procs
    draining = [x for x in samples if 0 < x[0] < ctx["n"]]
    if len(draining) >= 2 and draining[-1][2] > draining[0][2]:
        # Cores the worker process(es) kept busy while outputs flowed (the rest of the
        # machine ran the broker and this script's polling).
        first, last = draining[0], draining[-1]
        result["cores_busy"] = (last[3] - first[3]) / (last[2] - first[2])
    if app == "worker" and n_procs == 1:
        # RSS growth from the first output to the end, per 10k distinct users.
        started = [s for s in samples if s[0] > 0]
        if started and started[-1][1] and started[0][1]:
            users = ctx["n_users"]
            grown = started[-1][1] - started[0][1]
            result["rss_mb_end"] = started[-1][1] / 2**20
            result["rss_growth_mb_per_10k_users"] = grown / 2**20 / users * 1e4
        result["state"] = state_sizes(ctx["bootstrap"], app_id)
    log(
        f"[{name}] {rate:,.0f} events/s over {span_s:.1f}s "
        f"(outputs {len(ts):,}, {wall:.0f}s with start-up) load {loadavg()}"
    )
    return result


def latency_phase(
    name: str, rates: list[float], seconds: float, ctx: dict, run: int = 0
) -> list[dict]:
    app, model_key, env_extra, tree = VARIANTS[name]
    src = ctx["base_src"] if tree == "base" else ROOT
    # A variant named twice (repeated runs) gets fresh topics each time.
    tag = f"{ctx['tag']}-lat{run}-{name}"
    topics = {"in": f"{tag}-in", "rec": f"{tag}-rec", "pp": f"{tag}-pp", "dlq": f"{tag}-dlq"}
    create(ctx["bootstrap"], list(topics.values()))
    model = ctx["models"][model_key] if model_key else None
    log(f"[latency {name}] starting load {loadavg()}")
    proc = start(
        ctx["python"], app, model, env_extra, topics, tag, ctx["bootstrap"], src, ctx["workdir"]
    )
    results = []
    try:
        wait_ready(proc)
        offset = 0
        warmup = ctx.get("warmup_events") or []
        if warmup:
            # Not counted: a fresh worker's first load (first appends to fresh topics,
            # first calls of each step bucket) is measured by the runs without it.
            log(f"[latency {name}] warm-up: {len(warmup):,} events at {rates[0]:,.0f}/s")
            produce_at_rate(ctx["bootstrap"], topics["in"], warmup, rates[0])
            offset = len(warmup)
            wait_outputs(proc, ctx["bootstrap"], topics["rec"], offset, "warm-up", 300)
        pool = ctx["latency_events"]
        used = 0
        for rate in rates:
            count = min(len(pool) - used, int(rate * seconds))
            batch = pool[used : used + count]
            used += count
            offset += count
            log(f"[latency {name}] offering {rate:,.0f} events/s for {count:,} events")
            achieved = produce_at_rate(ctx["bootstrap"], topics["in"], batch, rate)
            wait_outputs(
                proc, ctx["bootstrap"], topics["rec"], offset, f"latency {rate:.0f}/s", 300
            )
            results.append({"rate": rate, "achieved_rate": achieved, "ids": {e[2] for e in batch}})
    finally:
        proc.stop()
    in_ts, in_ids, _ = read_topic(ctx["bootstrap"], topics["in"], want_ids=True)
    out_ts, out_ids, _ = read_topic(ctx["bootstrap"], topics["rec"], want_ids=True)
    sent = dict(zip(in_ids, in_ts.tolist(), strict=True))
    got = dict(zip(out_ids, out_ts.tolist(), strict=True))
    out = []
    for r in results:
        matched = [i for i in r["ids"] if i in got and i in sent]
        lat = np.asarray([got[i] - sent[i] for i in matched], float)
        sent_ms = np.asarray([sent[i] for i in matched], float)
        q = np.percentile(lat, [50, 95, 99]) if lat.size else [float("nan")] * 3
        row = {
            "variant": name,
            "offered_rate": r["rate"],
            "achieved_offered_rate": r["achieved_rate"],
            "events": int(lat.size),
            "p50_ms": float(q[0]),
            "p95_ms": float(q[1]),
            "p99_ms": float(q[2]),
            "max_ms": float(lat.max()) if lat.size else float("nan"),
            **latency_timeline(sent_ms, lat),
            "latencies_ms": lat,
        }
        log(
            f"[latency {name}] {r['rate']:,.0f}/s offered ({r['achieved_rate']:,.0f} achieved): "
            f"p50 {row['p50_ms']:.0f} p95 {row['p95_ms']:.0f} p99 {row['p99_ms']:.0f} "
            f"max {row['max_ms']:.0f} ms; after {LATE_START_S:.0f} s p99 "
            f"{row['late_p99_ms']:.0f} ms; max per second {row['max_per_second_ms']}"
        )
        out.append(row)
    return out


LATE_START_S = 2.0
"""Events offered this long after a rate starts count as steady state in
`latency_timeline` (a fresh worker's first seconds can hold a backlog)."""


def latency_timeline(sent_ms: np.ndarray, lat: np.ndarray) -> dict:
    """Where in the run the latency tail sits: the largest latency of the events offered
    in each second, and p50/p95/p99 of those offered after `LATE_START_S`."""
    if not lat.size:
        return {"max_per_second_ms": [], "late_events": 0,
                **{f"late_p{q}_ms": float("nan") for q in (50, 95, 99)}}  # fmt: skip
    second = ((sent_ms - sent_ms.min()) // 1000).astype(int)
    per_second = [int(lat[second == s].max()) for s in np.unique(second)]
    late = lat[sent_ms - sent_ms.min() >= LATE_START_S * 1000]
    q = np.percentile(late, [50, 95, 99]) if late.size else [float("nan")] * 3
    return {"max_per_second_ms": per_second, "late_events": int(late.size),
            "late_p50_ms": float(q[0]), "late_p95_ms": float(q[1]), "late_p99_ms": float(q[2])}  # fmt: skip


def codec_bytes(model: Path) -> dict:
    """Encoded state size of a user with a full history, straight from the codec."""
    from stream_app.settings import CarryDtype
    from stream_app.state import LastResult, UserState, encode_state, event_key

    carry_size = None
    try:
        from rnnrec_jax.serving import load_serving_model
        from stream_app.scoring import ServingModelScorer

        scorer = ServingModelScorer(load_serving_model(str(model), buckets=(8,)))
        carry_size = int(scorer.initial_carry().size)
    except Exception:
        carry_size = 64 * 3 + 4
    items = [str(214800000 + i) for i in range(50)]
    result = LastResult(
        "12345678-3~0", "12345678~0", items[:20], [1.234567] * 20, 0.12, "1", 1.4e9, 1.7e9,
        {"method": "occlusion", "recent_items": items[-5:],
         "weights": [[0.123456, -0.234567, 0.345678, 1.456789, 0.0]] * 20},
    )  # fmt: skip
    out = {"carry_floats": carry_size}
    for label, hist, res in (("1 event", 1, result), ("50 events", 50, result)):
        state = UserState(
            carry=np.ones(carry_size, np.float32), recent_items=items[:hist],
            session_id="12345678~0", session_counter=1, session_events=hist,
            last_event_ts=1.4e9, model_version="1", event_count=hist, source_partition=3,
            source_offset=12345,
            recent_events=[(event_key(f"12345678-{i}~0"), b"\x01" * 8) for i in range(hist)],
            last_result=res,
        )  # fmt: skip
        for dtype in (CarryDtype.FLOAT32, CarryDtype.FLOAT16):
            out[f"{label}, carry {dtype}"] = len(encode_state(state, dtype))
    return out


# ------------------------------------------------------------------------ report


def noop_pair(name: str) -> tuple[str, ...]:
    """What a variant's no-op must share with it: source tree, batch, loop, malloc."""
    env = VARIANTS[name][2]
    return (
        VARIANTS[name][3],
        env.get("RNNREC_MAX_BATCH", ""),
        env.get("RNNREC_EVENT_LOOP", ""),
        env.get("GLIBC_TUNABLES", ""),
        env.get("RNNREC_NOOP_OUTPUT_BYTES", ""),  # only the default no-op is a baseline
    )


def fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def write_report(report: dict, latencies: list[dict], out: Path = OUT) -> None:
    from rnnrec_jax.plots import plot_latency_histogram

    out.mkdir(parents=True, exist_ok=True)
    png = out / "serving_latency.png"
    if latencies:
        plot_latency_histogram(latencies[0]["latencies_ms"], png)
    report["latency"] = [{k: v for k, v in r.items() if k != "latencies_ms"} for r in latencies]
    m = report["machine"]
    noop = {(r.get("round", 0), noop_pair(r["variant"])): r["events_per_s"]
            for r in report["drain"] if r["app"] == "noop"}  # fmt: skip
    lines = [
        "# Serving worker: drain rate, latency, state size",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {m['cpus']} CPUs, {m['cpu_model']}, {m['platform']}, Python {m['python']}, "
        f"jax {m['jax']} (CPU)  ",
        f"Load average before {report['load_before']}, after {report['load_after']} "
        "(**shared machine**: other jobs ran on the same cores; compare rows of one run).  ",
        f"Drain: {report['events']:,} events ({report['users']:,} users) pre-loaded on a "
        f"{PARTITIONS}-partition LogAppendTime topic; rate = outputs / (last - first output "
        "broker timestamp), start-up excluded.  ",
        "",
        "| variant | model | events/s | vs the round's no-op | drain s | "
        "worker cores busy | RSS growth MB/10k users |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["drain"]:
        base = noop.get((r.get("round", 0), noop_pair(r["variant"])))
        ratio = r["events_per_s"] / base if base and r["app"] != "noop" else None
        rss = r.get("rss_growth_mb_per_10k_users")
        lines.append(
            f"| {r['variant']} | {r['model'] or '-'} | {r['events_per_s']:,.0f} | "
            f"{'' if ratio is None else f'{ratio:.2f}x'} | {r['drain_span_s']:.1f} | "
            f"{fmt(r.get('cores_busy'), '.2f')} | {fmt(rss, '.1f')} |"
        )
    rounds = {r.get("round", 0) for r in report["drain"]}
    if len(rounds) > 1:
        by_variant: dict[str, list[float]] = {}
        for r in report["drain"]:
            by_variant.setdefault(r["variant"], []).append(r["events_per_s"])
        medians = {v: float(np.median(x)) for v, x in by_variant.items()}
        report["drain_median"] = medians
        lines += [
            "",
            f"Median over {len(rounds)} interleaved rounds (the machine's speed drifts "
            "between rounds; compare medians):",
            "",
            "| variant | events/s per round | median | vs no-op median |",
            "|---|---|---:|---:|",
        ]
        # A base-* worker against the base no-op where the run has one.
        noop_median = {noop_pair(v): m for v, m in medians.items() if VARIANTS[v][0] == "noop"}
        for v, xs in by_variant.items():
            pair = noop_pair(v)
            noop = noop_median.get(pair, noop_median.get(("new", *pair[1:])))
            ratio = medians[v] / noop if noop and VARIANTS[v][0] != "noop" else None
            lines.append(
                f"| {v} | {', '.join(f'{x:,.0f}' for x in xs)} | {medians[v]:,.0f} | "
                f"{fmt(ratio, '.2f')} |"
            )
    if report["latency"]:
        lines += [
            "",
            "Latency: input broker timestamp to recommendation broker timestamp "
            "(LogAppendTime), fixed offered rate, fresh worker after /ready"
            + (
                f" and {report['latency_warmup_s']:g} s of warm-up events (not counted)."
                if report.get("latency_warmup_s")
                else "."
            ),
            "",
            "| variant | offered events/s | achieved | events | p50 ms | p95 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in report["latency"]:
            lines.append(
                f"| {r['variant']} | {r['offered_rate']:,.0f} | {r['achieved_offered_rate']:,.0f} "
                f"| {r['events']:,} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} "
                f"| {r['max_ms']:.0f} |"
            )
        lines += [
            "",
            f"The same, events offered {LATE_START_S:.0f} s or more after the rate started "
            "(past a fresh worker's first seconds), and the largest latency of the events "
            "offered in each second of the run:",
            "",
            "| variant | offered events/s | events | p50 ms | p95 ms | p99 ms | max per second, ms |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in report["latency"]:
            lines.append(
                f"| {r['variant']} | {r['offered_rate']:,.0f} | {r['late_events']:,} "
                f"| {r['late_p50_ms']:.0f} | {r['late_p95_ms']:.0f} | {r['late_p99_ms']:.0f} "
                f"| {', '.join(str(x) for x in r['max_per_second_ms'])} |"
            )
        lines += ["", f"Histogram of the first latency row: `{png.name}`."]
    lines += ["", "State (encode_state bytes per user):", ""]
    for r in report["drain"]:
        if r.get("state"):
            s = r["state"]
            lines.append(
                f"* {r['variant']}: {s['users']:,} users in the changelog, mean "
                f"{s['bytes_per_user_mean']:,.0f} B, median {s['bytes_per_user_p50']:,.0f} B, "
                f"max {s['bytes_per_user_max']:,.0f} B"
            )
    for k, v in report["codec"].items():
        lines.append(f"* codec, {k}: {v}")
    (out / "serving.md").write_text("\n".join(lines) + "\n")
    (out / "serving.json").write_text(json.dumps(report, indent=2, default=str))
    log(f"wrote {out / 'serving.md'}, serving.json, {png.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000, help="N events to drain")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"of {', '.join(VARIANTS)}")
    parser.add_argument(
        "--latency-variant",
        default="worker-explain-256",
        help="variant(s) of the latency phase, comma-separated (each a fresh worker)",
    )
    parser.add_argument(
        "--latency-rates",
        default="",
        help="fixed offered events/s, comma-separated, the same for every latency variant "
        "(default: half the first variant's drain rate, and --low-rate)",
    )
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--latency-warmup-seconds",
        type=float,
        default=0.0,
        help="offer this many seconds of other events at the first rate to each fresh "
        "worker before measuring (excluded from the figures)",
    )
    parser.add_argument("--low-rate", type=float, default=1000.0, help="capped at drain/4")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="drain every variant this many times, interleaved (the report adds medians)",
    )
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument(
        "--out",
        type=Path,
        default=OUT,
        help="folder of serving.{md,json} and the histogram (default: the recorded "
        "bench/results; point exploratory runs elsewhere)",
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    )
    args = parser.parse_args()
    command = " ".join([sys.executable, *sys.argv])
    info = machine()
    load_before = loadavg()
    log(f"command: {command}")
    log(f"machine: {info}")
    log(f"load average before: {load_before}")
    names = [v for v in args.variants.split(",") if v]
    latency_names = [v for v in args.latency_variant.split(",") if v]
    unknown = [v for v in [*names, *latency_names] if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}")
    if args.baseline_src is None:
        names = [v for v in names if VARIANTS[v][3] != "base"]
    python = sys.executable
    models = ensure_models(python, {VARIANTS[v][1] for v in [*names, *latency_names]})
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    events = make_events(args.events)
    users = len({e[0] for e in events})
    ctx = {
        "python": python,
        "bootstrap": args.bootstrap,
        "models": models,
        "tag": tag,
        "n": args.events,
        "n_users": users,
        "input_topic": f"{tag}-in",
        "base_src": args.baseline_src,
        "workdir": Path(tempfile.mkdtemp(prefix="rnnrec-bench-")),
    }
    log(f"pre-loading {len(events):,} events ({users:,} users) onto {ctx['input_topic']} ...")
    create(args.bootstrap, [ctx["input_topic"]])
    produce_all(args.bootstrap, ctx["input_topic"], events)
    drains = []
    for round_no in range(args.rounds):
        for name in names:
            try:
                drains.append({**drain_variant(name, ctx, round_no), "round": round_no})
            except Exception as exc:
                log(f"[{name}] FAILED: {exc}")
    latencies = []
    if latency_names and args.latency_seconds > 0:
        if args.latency_rates:
            rates = [float(r) for r in args.latency_rates.split(",") if r]
        else:
            drained = {r["variant"]: r["events_per_s"] for r in drains}
            half = drained.get(latency_names[0])
            low = min(args.low_rate, half / 4) if half else args.low_rate  # always below half
            rates = [r for r in (half / 2 if half else None, low) if r]
        pool_n = int(sum(rates) * args.latency_seconds) + 10
        ctx["latency_events"] = make_events(pool_n, tag="L")  # users new to each worker
        warm_n = int(rates[0] * args.latency_warmup_seconds)
        ctx["warmup_events"] = make_events(warm_n, tag="W") if warm_n else []
        for run, name in enumerate(latency_names):
            try:
                latencies += latency_phase(name, rates, args.latency_seconds, ctx, run)
            except Exception as exc:
                log(f"[latency {name}] FAILED: {exc}")
    report = {
        "command": command,
        "machine": info,
        "shared_machine": True,
        "load_before": load_before,
        "load_after": loadavg(),
        "events": args.events,
        "users": users,
        "drain": drains,
        "latency_warmup_s": args.latency_warmup_seconds,
        "codec": codec_bytes(models["1pct"]),
    }
    write_report(report, latencies, args.out)
    log(f"load average after: {report['load_after']}")


if __name__ == "__main__":
    main()
