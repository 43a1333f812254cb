"""Worker options end to end: RNNREC_EXCLUDE_SEEN with a real model, RNNREC_STORE=rocksdb://."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from rocksdict import AccessType, Options, Rdict

from rnnrec_jax.model_io import load_trained_model
from rnnrec_jax.serving import ServingModel
from stream_app.kafka_io import produce
from stream_app.scoring import ServingModelScorer, UserSteps, score_in_rounds
from stream_app.state import decode_state
from tests.chaos.support import changelog_topic, end_offsets
from tests.processes import tail
from tests.serving_models import cached_tiny_model
from tests.worker_harness import click, make_setup, read_outputs, running_worker, scrape

T0 = 1_600_000_000.0
SESSIONS = 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    return cached_tiny_model(tmp_path_factory)


def test_exclude_seen_keeps_every_item_of_the_session_out_of_its_recommendations(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path, tiny: tuple
) -> None:
    model_dir, _, test_df = tiny
    sessions = {
        f"s{session}": [str(item) for item in group.ItemId]
        for session, group in list(test_df.groupby("SessionId", sort=False))[:SESSIONS]
    }
    # Each session clicks its first item again at the end: a seen item the model
    # ranks high right after it was clicked.
    sessions = {user: [*items, items[0]] for user, items in sessions.items()}

    # Without exclusion the same model recommends seen items for most of these events
    # (scored here in-process), so the check below can fail.
    model = load_trained_model(model_dir)
    scorer = ServingModelScorer(ServingModel.from_trained(model, buckets=(8,), k=20))
    steps = [
        UserSteps(carry=None, items=items, emit=[True] * len(items),
                  reset=[True] + [False] * (len(items) - 1), excluded=[None] * len(items))
        for items in sessions.values()
    ]  # fmt: skip
    plain, _ = score_in_rounds(scorer, steps, 8, 20)
    with_seen = sum(
        bool(set(items[: i + 1]) & set(out.items))  # type: ignore[union-attr]
        for items, outs in zip(sessions.values(), plain, strict=True)
        for i, out in enumerate(outs)
    )
    n = sum(len(items) for items in sessions.values())
    assert with_seen >= n // 4, f"only {with_seen} of {n} plain recommendations repeat an item"

    records = [
        click(user, f"{user}-{i}", item, T0 + i, session_id=user)
        for user, items in sessions.items()
        for i, item in enumerate(items)
    ]
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, RNNREC_MODEL_SOURCE=str(model_dir))
    env = {
        "RNNREC_SCORER_FACTORY": "",
        "RNNREC_BUCKET_SIZES": "8,64",
        "RNNREC_EXCLUDE_SEEN": "true",
        "RNNREC_EVENT_LOOP": "asyncio",  # the standard library's loop still serves
    }
    with running_worker(setup, **env) as proc:
        produce(kafka_bootstrap, setup.topic("clickstream"), records)
        recs = read_outputs(setup, "recommendations", n, proc)
        loops = {
            dict(labels)["implementation"]
            for (name, labels), v in scrape(setup).items()
            if name == "rnnrec_event_loop_info" and v == 1
        }
    assert loops == {"asyncio"}

    repeats = []
    for record in recs:
        out = orjson.loads(record.value)
        position = int(out["event_id"].rsplit("-", 1)[1])
        seen = set(sessions[out["user_id"]][: position + 1])
        assert len(out["items"]) == 20
        if seen & set(out["items"]):
            repeats.append(out["event_id"])
    assert len(recs) == n and not repeats, repeats


PERSISTED_OFFSET_KEY = b"__faust\0offset__"  # faust.stores.rocksdb.Store.offset_key


def test_rocksdb_store_keeps_state_on_disk_across_a_restart(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, RNNREC_STORE="rocksdb://")
    users = ("u0", "u1", "u2")
    events = [
        click(u, f"{u}-{i}", str(100 * n + i), T0 + i, session_id="s")
        for i in range(4)
        for n, u in enumerate(users)
    ]
    with running_worker(setup) as proc:
        produce(kafka_bootstrap, setup.topic("clickstream"), events[:6])
        read_outputs(setup, "recommendations", 6, proc)
    assert proc.returncode == 0, tail(setup.log)
    # One RocksDB database per table partition, each with its files.
    databases = sorted(setup.data_dir.rglob("user-state-*.db"))
    assert len(databases) == setup.partitions, databases
    on_disk, persisted = {}, {}
    for path in databases:
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            on_disk.update({orjson.loads(k): decode_state(v) for k, v in db.items()
                            if not k.startswith(b"__faust")})  # fmt: skip
            if (offset := db.get(PERSISTED_OFFSET_KEY)) is not None:
                persisted[int(path.stem.rsplit("-", 1)[1])] = int(offset)
        finally:
            db.close()
    assert {u: s.event_count for u, s in on_disk.items()} == dict.fromkeys(users, 2)
    # Each partition's database knows the changelog offset it holds up to, so a restart
    # on this volume reads only the changelog records after it.
    ends = end_offsets(kafka_bootstrap, changelog_topic(setup), setup.partitions)
    assert persisted == {p: end - 1 for p, end in ends.items() if end > 0}

    with running_worker(setup) as proc:  # the same data dir
        produce(kafka_bootstrap, setup.topic("clickstream"), events[6:])
        recs = read_outputs(setup, "recommendations", len(events), proc)
        preds = read_outputs(setup, "purchase_predictions", len(events), proc)
    assert proc.returncode == 0, tail(setup.log)

    last_recs = {orjson.loads(r.value)["event_id"]: orjson.loads(r.value) for r in recs}
    last_preds = {orjson.loads(r.value)["event_id"]: orjson.loads(r.value) for r in preds}
    for n, user in enumerate(users):
        # The fourth event continues the first two: four steps, all four items.
        assert last_recs[f"{user}-3"]["items"] == [str(100 * n + i) for i in (3, 2, 1, 0)]
        assert abs(last_preds[f"{user}-3"]["p_purchase"] - 0.4) < 1e-6
