"""The poison corpus mixed into a good stream on the real broker.

Every bad record lands in the DLQ exactly once with its reason and its source in the
headers, every good record (the known stream and the valid look-alikes, mis-keyed
ones included, which the worker repartitions) gets exactly the outputs a clean stream
would give, a redelivery is not bad input and steps
nothing, /metrics counts each reason, and the worker never stops.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import jsonschema
import orjson

from stream_app.dlq import headers_as_dict
from stream_app.events import ErrorKind, InputLimits, load_schema
from stream_app.settings import WorkerSettings
from tests.chaos.poison_corpus import (
    PoisonCase,
    conflict_case,
    good_look_alikes,
    miskeyed_look_alikes,
    poison_cases,
)
from tests.chaos.support import (
    KnownStream,
    labelled,
    output_counts,
    parse_metrics,
    produce_at,
)
from tests.processes import tail
from tests.worker_harness import get_json, make_setup, read_outputs, running_worker


def metrics_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_poison_corpus_goes_to_the_dlq_by_reason_while_good_events_flow(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    settings = WorkerSettings()  # the defaults the worker runs with here
    limits = InputLimits.from_settings(settings)
    stream = KnownStream(users=4, per_user=15)
    good = stream.records()
    # Key mismatches are repartitioned by default, not dead letters: served below.
    poison = [c for c in poison_cases(limits) if c.kind != ErrorKind.KEY_MISMATCH]
    conflict = conflict_case(*stream.record(0, 0))
    redelivered = stream.record(1, 3)
    miskeyed = miskeyed_look_alikes()
    look_alikes = good_look_alikes(limits) + miskeyed

    # Interleave: poison i after good record i; the conflict after u0's first event,
    # the redelivery right behind the original (same key: same partition, in order).
    mixed: list[tuple[bytes | None, bytes | None, PoisonCase | str | None]] = []
    for i, (key, value) in enumerate(good):
        mixed.append((key, value, None))
        if (key, value) == redelivered:
            mixed.append((key, value, "redelivery"))
        if i < len(poison):
            mixed.append((poison[i].key, poison[i].value, poison[i]))
        if i == stream.users:
            mixed.append((conflict.key, conflict.value, conflict))
    mixed += [(p.key, p.value, p) for p in poison[len(good) :]]
    mixed += [(g.key, g.value, "look-alike") for g in look_alikes]
    bad = [tag for *_, tag in mixed if isinstance(tag, PoisonCase)]
    assert len(bad) == len(poison) + 1

    with running_worker(setup) as proc:
        where = produce_at(kafka_bootstrap, setup.topic("clickstream"), [m[:2] for m in mixed])
        dlq = read_outputs(setup, "dlq", len(bad), proc)
        n_good = stream.total + len(look_alikes)
        recs = read_outputs(setup, "recommendations", n_good, proc)
        preds = read_outputs(setup, "purchase_predictions", n_good, proc)
        time.sleep(1.0)  # an extra DLQ record or output would arrive right behind
        dlq = read_outputs(setup, "dlq", len(bad), proc)
        metrics = parse_metrics(metrics_text(setup.url("/metrics")))
        health = get_json(setup.url("/health"))
        assert proc.poll() is None, tail(setup.log)
    assert health == (200, {"status": "ok"})

    # Each bad record: one DLQ record with its reason, source, key and bytes.
    case_at = {where[i]: tag for i, (*_, tag) in enumerate(mixed) if isinstance(tag, PoisonCase)}
    header_schema = load_schema("clickstream-dlq-headers")
    seen: Counter[str] = Counter()
    wrong = []
    for letter in dlq:
        headers = headers_as_dict(letter.headers)
        jsonschema.validate(headers, header_schema)
        source = (int(headers["rnnrec.source.partition"]), int(headers["rnnrec.source.offset"]))
        case = case_at.get(source)
        assert case is not None, f"a DLQ record for good input at {source}: {letter.value[:80]!r}"
        seen[case.name] += 1
        if headers["rnnrec.error.kind"] != case.kind:
            wrong.append((case.name, headers["rnnrec.error.kind"], str(case.kind)))
        assert headers["rnnrec.source.topic"] == setup.topic("clickstream")
        assert letter.key == case.key, case.name
        original = case.value or b""
        assert int(headers["rnnrec.original.size"]) == len(original), case.name
        if headers["rnnrec.truncated"] == "true":
            assert len(original) > settings.dlq_max_payload_bytes, case.name
            assert letter.value == original[: settings.dlq_max_payload_bytes], case.name
        else:
            assert letter.value == original, case.name
    assert not wrong, f"wrong reasons (case, got, expected): {wrong}"
    assert sorted(seen) == sorted(c.name for c in bad), "some bad records never reached the DLQ"
    assert set(seen.values()) == {1}, {k: n for k, n in seen.items() if n > 1}
    assert "huge payload" in {c.name for c in bad}

    # Each reason counted on /metrics.
    expected_counts = Counter(str(c.kind) for c in bad)
    assert labelled(metrics, "rnnrec_dead_letters_total", "reason") == expected_counts
    assert len(expected_counts) >= 14, sorted(expected_counts)
    assert metrics[("rnnrec_repartitioned_total", frozenset())] == len(miskeyed)

    # Good events: exactly a clean stream's outputs; the redelivery stepped nothing
    # (u1's later outputs would differ) and at most re-sent u1-3's stored result.
    ours = [r for r in recs if orjson.loads(r.value)["user_id"].startswith("u")]
    counts = output_counts(stream, ours)
    assert set(counts) == stream.event_ids()
    assert {k: n for k, n in counts.items() if n > 1 and k != "u1-3"} == {}
    assert counts["u1-3"] <= 2
    assert sum(labelled(metrics, "rnnrec_redeliveries_total", "resent").values()) == 1
    pred_counts = output_counts(stream, [r for r in preds if r.key and r.key.startswith(b"u")])
    assert set(pred_counts) == stream.event_ids()
    look_alike_ids = {orjson.loads(r.value)["event_id"] for r in recs} - set(counts)
    assert look_alike_ids == {g.event_id for g in look_alikes}
    print(
        f"poison: {len(bad)} bad records of {len(expected_counts)} reasons -> DLQ, "
        f"{n_good} good records answered, worker up"
    )
