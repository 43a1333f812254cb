"""The serving worker end to end on the real broker: outputs, DLQ, idempotence by event id."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import jsonschema
import orjson
import pytest

from stream_app.dlq import headers_as_dict
from stream_app.events import load_schema
from stream_app.kafka_io import produce
from tests.worker_harness import click, make_setup, read_outputs, running_worker

T0 = 1_600_000_000.0


def by_event(records: list) -> dict[str, dict]:
    return {orjson.loads(r.value)["event_id"]: orjson.loads(r.value) for r in records}


def test_good_events_get_both_outputs_with_schema_fields(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path)
    events = [
        click(f"u{i % 3}", f"e{i}", str(10 + i), T0 + i, **({"session_id": "s"} if i % 3 else {}))
        for i in range(12)
    ]
    with running_worker(setup) as proc:
        produce(kafka_bootstrap, setup.topic("clickstream"), events)
        recs = read_outputs(setup, "recommendations", 12, proc)
        preds = read_outputs(setup, "purchase_predictions", 12, proc)

    rec_schema, pred_schema = load_schema("recommendations"), load_schema("purchase-predictions")
    for record in recs:
        jsonschema.validate(orjson.loads(record.value), rec_schema)
    for record in preds:
        jsonschema.validate(orjson.loads(record.value), pred_schema)
    recs_by_id, preds_by_id = by_event(recs), by_event(preds)
    assert sorted(recs_by_id) == sorted(preds_by_id) == sorted(f"e{i}" for i in range(12))
    for record in recs:
        assert record.key == orjson.loads(record.value)["user_id"].encode()
    # u0 has no session ids: a generated one; its events are applied in order, so the
    # (test double's) recommendations are its items so far, newest first.
    u0 = [recs_by_id[f"e{i}"] for i in (0, 3, 6, 9)]
    assert [r["session_id"] for r in u0] == [f"u0#{round(T0 * 1000)}"] * 4
    assert u0[-1]["items"] == ["19", "16", "13", "10"]
    p_u0 = [preds_by_id[f"e{i}"]["p_purchase"] for i in (0, 3, 6, 9)]
    assert p_u0 == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=1e-6)
    assert recs_by_id["e1"]["session_id"] == "s" and recs_by_id["e1"]["event_ts"] == T0 + 1
    assert all(r["model_version"] == "test-1" and not r["state_recomputed"] for r in u0)


def test_every_poison_kind_goes_to_the_dlq_while_good_events_flow(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    setup = make_setup(
        kafka_bootstrap, unique_name, tmp_path,
        RNNREC_MAX_MESSAGE_BYTES="2048", RNNREC_DLQ_MAX_PAYLOAD_BYTES="512",
        RNNREC_REPARTITION="false",  # strict keys: key_mismatch is a dead letter
    )  # fmt: skip
    good = {"event_id": "g", "user_id": "u1", "item_id": "1", "ts": T0}
    poison: list[tuple[bytes | None, bytes | None, str]] = [
        (b"u1", None, "no_value"),
        (b"u1", orjson.dumps({**good, "pad": "x" * 3000}), "too_large"),
        (b"u1", b'{"event_id": "\xff"}', "invalid_utf8"),
        (b"u1", b"{nope", "invalid_json"),
        (b"u1", b"[1, 2]", "not_an_object"),
        (b"u1", orjson.dumps({"event_id": "p", "user_id": "u1", "ts": T0}), "missing_field"),
        (b"u1", orjson.dumps({**good, "item_id": 5}), "wrong_type"),
        (b"u1", orjson.dumps({**good, "item_id": ""}), "empty_value"),
        (b"u1", orjson.dumps({**good, "item_id": "i" * 300}), "id_too_long"),
        (b"u1", orjson.dumps({**good, "ts": -5}), "bad_timestamp"),
        (b"u1", orjson.dumps({**good, "type": "hover"}), "unknown_type"),
        (b"other", orjson.dumps(good), "key_mismatch"),
    ]
    records: list[tuple[bytes | None, bytes | None]] = []
    expected_kinds: Counter[str] = Counter()
    for i, (key, value, kind) in enumerate(poison):
        records.append(click("u1", f"good-{i}", str(100 + i), T0 + i))
        records.append((key, value))
        expected_kinds[kind] += 1
    # Same event id, same bytes: a redelivery (no DLQ, no second step). Same id,
    # different bytes: a conflict.
    records.append(click("u1", "good-0", "100", T0 + 0))
    records.append(click("u1", "good-1", "999", T0 + 1))
    expected_kinds["event_id_conflict"] += 1
    records.append(click("u1", "last", "7", T0 + 100))

    with running_worker(setup) as proc:
        produce(kafka_bootstrap, setup.topic("clickstream"), records)  # type: ignore[arg-type]
        dlq = read_outputs(setup, "dlq", sum(expected_kinds.values()), proc)
        recs = read_outputs(setup, "recommendations", len(poison) + 1, proc)

    header_schema = load_schema("clickstream-dlq-headers")
    kinds: Counter[str] = Counter()
    sent = {value: key for key, value in records if value is not None}
    for letter in dlq:
        headers = headers_as_dict(letter.headers)
        jsonschema.validate(headers, header_schema)
        kinds[headers["rnnrec.error.kind"]] += 1
        assert headers["rnnrec.source.topic"] == setup.topic("clickstream")
        if headers["rnnrec.truncated"] == "true":
            assert headers["rnnrec.error.kind"] == "too_large" and len(letter.value) == 512
        elif letter.value:
            assert letter.value in sent and sent[letter.value] == letter.key
    assert kinds == expected_kinds
    outputs = [orjson.loads(r.value) for r in recs]
    assert sorted(o["event_id"] for o in outputs) == sorted(
        [f"good-{i}" for i in range(len(poison))] + ["last"]
    )
    # 12 good events stepped u1's state once each: the redelivery did not step it.
    last = next(o for o in outputs if o["event_id"] == "last")
    assert last["items"][:3] == ["7", "111", "110"]
    preds = read_outputs(setup, "purchase_predictions", len(poison) + 1)
    p_last = next(orjson.loads(r.value) for r in preds if b'"last"' in r.value)["p_purchase"]
    assert p_last == 1.0  # min(1, 13 steps / 10): 12 good + last
