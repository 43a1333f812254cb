"""Recovery benchmark: worker start to /ready with N users in state, memory and disk per user.

For each size N the changelog topic of a fresh app id is pre-filled directly (aiokafka
producer, no events streamed) with N realistic per-user states encoded by
``stream_app.state.encode_state``: a 151-float carry (the default model's), 1 to 20
recent items and event digests, and the last result with 20 items and, unless
``--no-explain``, an occlusion explanation like the worker stores (about 3.7 KB per
user, as ``bench/bench_serving.py`` measured on real traffic). Then, per store
(``memory://``, ``rocksdb://``), a worker process starts with an empty data dir and
the time to ``/ready`` (partitions assigned, table recovered) is measured, with the
worker's RSS sampled from /proc, the users it reports (``rnnrec_users_in_state``) and
the data dir's size. With ``rocksdb://`` a second start on the same data dir (the
StatefulSet case) is timed as well. A run with an empty changelog gives the baseline
RSS and start time, so memory per user = (RSS at ready - baseline) / N.

The worker serves the test double scorer (``tests.worker_scorers``): recovery does
not depend on the model, and a model's own load time would only be added on top.

    .venv/bin/python bench/recovery.py --users 10000              # validation, ~1 min
    .venv/bin/python bench/recovery.py --users 100000,1000000     # the issue's sizes

Writes bench/results/recovery.{json,md} and recovery.png. Figures only, no pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import shutil
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host import free_port, machine, rss_bytes  # noqa: E402  (bench/host.py; run as a script)

from stream_app.state import LastResult, UserState, encode_state, event_key  # noqa: E402

OUT = ROOT / "bench" / "results"
CARRY_FLOATS = 151
"""Carry length of the default serving model (tiny config with attention readout)."""
POOL = 4096
"""Distinct encoded states, cycled over the users (their keys differ)."""


def log(msg: str) -> None:
    print(msg, flush=True)


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                continue
    return total


# ---------------------------------------------------------------------------- states


def state_pool(n: int, explain: bool, seed: int = 0) -> list[bytes]:
    """``n`` distinct encoded states shaped like the worker's."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    pool = []
    for i in range(n):
        length = rng.randint(1, 20)
        items = [str(rng.randint(214_500_000, 214_900_000)) for _ in range(length)]
        ids = [f"ev-{i}-{j}" for j in range(length)]
        events = [(event_key(eid), rng.randbytes(8)) for eid in ids]
        top = [str(rng.randint(214_500_000, 214_900_000)) for _ in range(20)]
        scores = sorted((round(rng.random(), 6) for _ in range(20)), reverse=True)
        explanation = None
        if explain:
            window = items[-5:]
            weights = [[round(rng.gauss(0.0, 1.0), 6) + 0.0 for _ in window] for _ in top]
            explanation = {"method": "occlusion", "recent_items": window, "weights": weights}
        ts = 1_396_000_000.0 + rng.random() * 1e7
        state = UserState(
            carry=nprng.standard_normal(CARRY_FLOATS).astype(np.float32),
            recent_items=items,
            session_id=f"s-{i}",
            session_counter=1,
            session_events=length,
            last_event_ts=ts,
            model_version="1",
            event_count=length,
            source_partition=0,
            source_offset=i,
            recent_events=events,
            last_result=LastResult(
                ids[-1], f"s-{i}", top, scores, round(rng.random(), 6), "1", ts, ts + 0.1,
                explanation, False,
            ),
        )  # fmt: skip
        pool.append(encode_state(state))
    return pool


async def _fill(bootstrap: str, topic: str, users: int, pool: list[bytes]) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=50, max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )  # fmt: skip
    await producer.start()
    started = last = time.monotonic()
    try:
        pending = []
        for i in range(users):
            # Faust writes str table keys as JSON strings.
            key = orjson.dumps(f"user-{i}")
            pending.append(await producer.send(topic, key=key, value=pool[i % len(pool)]))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
            now = time.monotonic()
            if now - last > 10:
                rate = (i + 1) / (now - started)
                log(f"  filled {i + 1:,}/{users:,} ({rate:,.0f}/s, ETA {(users - i) / rate:.0f} s)")
                last = now
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


def create_topics(bootstrap: str, names: dict[str, dict[str, str]], partitions: int) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="rnnrec-bench")
    try:
        admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1, topic_configs=c)
             for n, c in names.items()]
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


# ---------------------------------------------------------------------------- worker


def get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def users_in_state(port: int) -> float | None:
    _status, body = get(f"http://127.0.0.1:{port}/metrics", timeout_s=600)
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("rnnrec_users_in_state "):
            return float(line.split()[1])
    return None


def start_to_ready(
    bootstrap: str, prefix: str, partitions: int, store: str, data_dir: Path, log_path: Path,
    timeout_s: float,
) -> dict[str, object]:  # fmt: skip
    """Start a worker, time it to /ready, sample RSS; stop it. Figures as a dict."""
    port = free_port()
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        RNNREC_TOPIC_PREFIX=f"{prefix}-",
        RNNREC_APP_ID=f"{prefix}-app",
        RNNREC_PARTITIONS=str(partitions),
        RNNREC_SCORER_FACTORY="tests.worker_scorers:recent_items_scorer",
        RNNREC_DATA_DIR=str(data_dir),
        RNNREC_WEB_PORT=str(port),
        RNNREC_STORE=store,
    )
    cmd = [sys.executable, "-m", "stream_app.cli", "worker", "-l", "warning"]
    started = time.monotonic()
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    samples: list[tuple[float, int]] = []
    ready_s = None
    last_report = started
    try:
        while time.monotonic() - started < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited {proc.returncode}; see {log_path}")
            samples.append((time.monotonic() - started, rss_bytes(proc.pid)))
            status, body = get(f"http://127.0.0.1:{port}/ready", timeout_s=1.0)
            if status == 200 and orjson.loads(body).get("ready"):
                ready_s = time.monotonic() - started
                break
            if time.monotonic() - last_report > 15:
                log(f"    recovering ... {time.monotonic() - started:.0f} s, RSS "
                    f"{samples[-1][1] / 2**20:,.0f} MiB")  # fmt: skip
                last_report = time.monotonic()
            time.sleep(0.1)
        if ready_s is None:
            raise RuntimeError(f"not ready within {timeout_s:.0f} s; see {log_path}")
        time.sleep(1.0)  # let the post-recovery allocations settle
        rss_ready = rss_bytes(proc.pid)
        users = users_in_state(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {
        "store": store,
        "ready_s": round(ready_s, 2),
        "rss_ready_bytes": rss_ready,
        "rss_peak_bytes": max(r for _, r in samples),
        "users_reported": users,
        "data_dir_bytes": dir_bytes(data_dir),
        "rss_trace": [(round(t, 1), r) for t, r in samples[:: max(1, len(samples) // 200)]],
    }


# ---------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, object]:
    sizes = [int(x) for x in args.users.split(",") if x]
    stores = [s if s.endswith("://") else f"{s}://" for s in args.stores.split(",") if s]
    work = Path(tempfile.mkdtemp(prefix="rnnrec-recovery-"))
    log(f"pool of {POOL} distinct states (explanations {'on' if args.explain else 'off'}) ...")
    pool = state_pool(POOL, args.explain)
    state_bytes = float(np.mean([len(v) for v in pool]))
    log(f"  encoded state: mean {state_bytes:,.0f} B")
    report: dict[str, object] = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "machine": machine(),
        "bootstrap": args.bootstrap,
        "partitions": args.partitions,
        "explain": args.explain,
        "state_bytes_mean": round(state_bytes, 1),
        "runs": [],
    }
    runs: list[dict[str, object]] = report["runs"]  # type: ignore[assignment]
    try:
        for users in [0, *sizes]:
            prefix = f"bench-recovery-{uuid.uuid4().hex[:8]}"
            changelog = f"{prefix}-app-user-state-changelog"
            create_topics(
                args.bootstrap,
                {f"{prefix}-clickstream": {}, changelog: {"cleanup.policy": "compact"}},
                args.partitions,
            )
            fill_s = 0.0
            if users:
                log(f"filling {changelog} with {users:,} users ...")
                fill_s = asyncio.run(_fill(args.bootstrap, changelog, users, pool))
                log(f"  {users:,} states in {fill_s:.1f} s ({users / fill_s:,.0f}/s)")
            try:
                for store in stores:
                    data_dir = work / f"{prefix}-{store.rstrip(':/')}"
                    log(f"  {users:,} users, {store}: starting a worker ...")
                    cold = start_to_ready(
                        args.bootstrap, prefix, args.partitions, store, data_dir,
                        work / f"{prefix}.log", args.ready_timeout,
                    )  # fmt: skip
                    cold.update(users=users, start="empty data dir", fill_s=round(fill_s, 1))
                    runs.append(cold)
                    log(f"    ready in {cold['ready_s']} s, RSS {cold['rss_ready_bytes'] / 2**20:,.0f}"
                        f" MiB, {cold['users_reported']} users, data dir "
                        f"{cold['data_dir_bytes'] / 2**20:,.1f} MiB")  # fmt: skip
                    if store == "rocksdb://" and users:
                        warm = start_to_ready(
                            args.bootstrap, prefix, args.partitions, store, data_dir,
                            work / f"{prefix}.log", args.ready_timeout,
                        )  # fmt: skip
                        warm.update(users=users, start="kept data dir", fill_s=0.0)
                        runs.append(warm)
                        log(f"    restart on the kept data dir: ready in {warm['ready_s']} s")
                    shutil.rmtree(data_dir, ignore_errors=True)
            finally:
                if not args.keep_topics:
                    delete_topics(args.bootstrap, prefix)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    baseline = {r["store"]: r for r in runs if r["users"] == 0}
    for r in runs:
        if r["users"]:
            base = baseline[r["store"]]
            r["rss_per_user_bytes"] = round(
                (r["rss_ready_bytes"] - base["rss_ready_bytes"]) / r["users"], 1
            )
            r["disk_per_user_bytes"] = round(r["data_dir_bytes"] / r["users"], 1)
    return report


def write(report: dict[str, object], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "recovery.json").write_text(json.dumps(report, indent=1))
    runs = [r for r in report["runs"] if r["users"]]  # type: ignore[union-attr]
    m = report["machine"]
    lines = [
        "# Recovery: worker start to /ready with N users in state",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {m['cpus']} CPUs, {m['cpu_model']}, {m['memory_gib']} GiB, {m['platform']}, "  # type: ignore[index]
        f"Python {m['python']}, Faust {m['faust']}; load at start {m['loadavg_at_start']}  ",  # type: ignore[index]
        f"Changelog: {report['partitions']} partitions, encoded state mean "
        f"{report['state_bytes_mean']:,.0f} B",
        "",
        "| users | store | start | ready s | RSS at ready MiB | RSS/user B | disk/user B | users reported |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["runs"]:  # type: ignore[union-attr]
        lines.append(
            f"| {r['users']:,} | {r['store']} | {r['start']} | {r['ready_s']} | "
            f"{r['rss_ready_bytes'] / 2**20:,.0f} | {r.get('rss_per_user_bytes', '')} | "
            f"{r.get('disk_per_user_bytes', '')} | {r['users_reported']} |"
        )
    (out / "recovery.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for store in sorted({r["store"] for r in runs}):
        for start, style in (("empty data dir", "o-"), ("kept data dir", "s--")):
            pts = sorted((r["users"], r["ready_s"]) for r in runs
                         if r["store"] == store and r["start"] == start)  # fmt: skip
            if pts:
                ax1.plot(*zip(*pts, strict=True), style, label=f"{store} ({start})")
        traces = [r for r in runs if r["store"] == store and r["start"] == "empty data dir"]
        if traces:
            big = max(traces, key=lambda r: r["users"])
            t, rss = zip(*big["rss_trace"], strict=True)
            ax2.plot(t, np.array(rss) / 2**20, label=f"{store}, {big['users']:,} users")
    ax1.set_xlabel("users in the changelog")
    ax1.set_ylabel("start to /ready (s)")
    ax1.set_xscale("log")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.set_xlabel("seconds since start")
    ax2.set_ylabel("worker RSS (MiB)")
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.suptitle("Worker recovery from the changelog")
    fig.tight_layout()
    fig.savefig(out / "recovery.png", dpi=110)
    log(f"wrote {out / 'recovery.json'}, recovery.md, recovery.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", default="10000", help="Comma-separated sizes.")
    parser.add_argument("--stores", default="memory,rocksdb", help="memory, rocksdb or both.")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"),
    )
    parser.add_argument("--no-explain", dest="explain", action="store_false")
    parser.add_argument("--ready-timeout", type=float, default=3600.0)
    parser.add_argument("--keep-topics", action="store_true", help="Leave the filled topics.")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    started = time.monotonic()
    report = run(args)
    report["total_s"] = round(time.monotonic() - started, 1)
    log(f"total {report['total_s']} s")
    write(report, args.out)


if __name__ == "__main__":
    main()
