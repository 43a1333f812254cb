"""Replay a dataset onto the clickstream topic in event-time order.

Every event becomes one clickstream record keyed by its user id (the session id
where the data has no users), with a deterministic ``event_id`` (the session id and
the event's position in the session), so replaying the same data twice produces the
same ids; the worker recognises a redelivered id among each user's last
``RNNREC_HISTORY_LENGTH`` events (older ones, replayed again at new offsets, are
applied again). Original ``ts`` values are kept. Every send's result is checked: a
record the broker refuses stops the replay with its error.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from rnnrec_jax.data import SessionEvents


def load_source(
    split_tsv: Path | None = None,
    yoochoose_dir: Path | None = None,
    synthetic_sessions: int | None = None,
    synthetic_items: int = 1000,
    seed: int = 0,
) -> SessionEvents:
    """Read exactly one replay source.

    Args:
        split_tsv: a GRU4Rec split file (``SessionId ItemId Time``).
        yoochoose_dir: a raw YooChoose folder (clicks and buys, merged by time).
        synthetic_sessions: generate this many synthetic sessions instead.
        synthetic_items: catalogue size of the synthetic data.
        seed: seed of the synthetic data.

    Returns:
        The events (any order; `clickstream_records` orders them by time).
    """
    chosen = [x is not None for x in (split_tsv, yoochoose_dir, synthetic_sessions)]
    if sum(chosen) != 1:
        raise ValueError("choose exactly one source: --split-tsv, --yoochoose or --synthetic")
    if split_tsv is not None:
        from rnnrec_jax.data import read_split_tsv

        return read_split_tsv(split_tsv)
    if yoochoose_dir is not None:
        from rnnrec_jax.data import read_yoochoose

        return read_yoochoose(yoochoose_dir).merged()
    from rnnrec_jax.data.synthetic import generate_event_log

    return generate_event_log(int(synthetic_sessions or 0), synthetic_items, seed).merged()


def clickstream_records(events: SessionEvents) -> Iterator[tuple[float, bytes, bytes]]:
    """Turn a table into ``(ts, key, value)`` clickstream records in time order.

    Ties keep the table's (session, time) order, so a session's events stay in order.

    Args:
        events: the events to replay.

    Returns:
        An iterator of ``(event time, key, JSON value)``.
    """
    offsets = events.session_offsets()
    position = np.arange(events.n_events) - np.repeat(offsets[:-1], events.session_lengths())
    order = np.argsort(events.times, kind="stable")
    users = events.user_ids
    types = events.event_types
    for row in order:
        session = str(events.session_ids[row])
        user = str(users[row]) if users is not None and users[row] else session
        ts = float(events.times[row])
        document = {
            "event_id": f"{session}-{int(position[row])}",
            "user_id": user,
            "item_id": str(events.item_ids[row]),
            "ts": ts,
            "session_id": session,
            "type": str(types[row]) if types is not None else "click",
        }
        yield ts, user.encode("utf-8"), orjson.dumps(document)


def replay(
    events: SessionEvents,
    bootstrap: str,
    topic: str,
    rate: float | None = None,
    speedup: float | None = None,
    limit: int | None = None,
    progress: bool = True,
    security: Mapping[str, Any] | None = None,
) -> int:
    """Produce the events to ``topic`` and wait for every acknowledgement.

    Args:
        events: what to replay.
        bootstrap: Kafka bootstrap servers.
        topic: the clickstream topic.
        rate: events per second (None: as fast as the broker takes them).
        speedup: replay event-time gaps this many times faster (exclusive with rate).
        limit: stop after this many events.
        progress: show a tqdm progress bar.
        security: kafka-python security options (`kafka_python_kwargs`; None: PLAINTEXT).

    Returns:
        The number of records acknowledged.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError
    from tqdm import tqdm

    if rate is not None and speedup is not None:
        raise ValueError("give --rate or --speedup, not both")
    total = events.n_events if limit is None else min(limit, events.n_events)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, **dict(security or {})
    )
    started = time.monotonic()
    first_ts: float | None = None
    sent = 0
    pending: list[Any] = []
    try:
        with tqdm(total=total, unit="ev", disable=not progress) as bar:
            for ts, key, value in clickstream_records(events):
                if sent >= total:
                    break
                first_ts = ts if first_ts is None else first_ts
                due = None
                if rate is not None:
                    due = started + sent / rate
                elif speedup is not None:
                    due = started + (ts - first_ts) / speedup
                if due is not None and (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                pending.append(producer.send(topic, key=key, value=value))
                sent += 1
                bar.update(1)
                if len(pending) >= _CHECK_EVERY:
                    pending = _unfinished(pending)
        # kafka-python's flush raises "Future not done" for a refused record, before
        # the send's own result is in; that result says why.
        with contextlib.suppress(KafkaError):
            producer.flush()
        for future in pending:
            future.get(timeout=_RESULT_WAIT_S)  # raises the broker's error
    finally:
        producer.close()
    return sent


_CHECK_EVERY = 10_000
"""Sends between checks of the delivery results (memory stays bounded)."""
_RESULT_WAIT_S = 30.0
"""How long the end of a replay waits for a send's result after the flush."""


def _unfinished(futures: list[Any]) -> list[Any]:
    """The sends not answered yet; raises the broker's error of a failed one.

    `KafkaProducer.flush` does not say which record the broker refused or why (no
    write permission, a record too large, a delivery timeout; at best it raises a
    vague "Future not done"): the results are checked here, every `_CHECK_EVERY`
    sends and at the end.
    """
    left = []
    for future in futures:
        if not future.is_done:
            left.append(future)
        elif future.failed():
            raise future.exception
    return left
