"""Model distribution on the real broker: publish, hot swap, refusals, rollback, kills.

Workers serve the tiny model (tests/serving_models.py). Versions reach them through
the compacted ``<prefix>-model-updates`` topic; bad artifacts are written straight to
the topic with kafka-python, as a faulty or hostile publisher would.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from kafka import KafkaProducer

from rnnrec_jax.artifact import canonical_json, pack_model
from rnnrec_jax.model_io import TrainedModel, load_trained_model
from rnnrec_jax.signing import load_private_key, sign_manifest, write_keypair
from stream_app.kafka_io import produce
from stream_app.model_registry import (
    load_serving_model_from_topic,
    publish_model,
    read_registry,
)
from stream_app.settings import WorkerSettings, load_settings
from tests.processes import running_process, tail
from tests.serving_models import cached_tiny_model, train_tiny
from tests.worker_harness import (
    WORKER_ARGS,
    WorkerSetup,
    click,
    free_port,
    make_setup,
    metric,
    read_outputs,
    running_worker,
    wait_ready,
)

CHUNK_BYTES = 64 * 1024
MODEL_ENV = {
    "RNNREC_SCORER_FACTORY": "",
    "RNNREC_BUCKET_SIZES": "8,64",  # few buckets: a fast warm-up on a shared machine
    "RNNREC_EXPLAIN_WINDOW": "0",
    "RNNREC_MODEL_CHUNK_BYTES": str(CHUNK_BYTES),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainedModel]:
    model_dir, _, _ = cached_tiny_model(tmp_path_factory)
    return model_dir, load_trained_model(model_dir)


def settings_for(setup: WorkerSetup, **overrides: Any) -> WorkerSettings:
    """The test process's view of the worker's settings (same topics, same model name)."""
    return load_settings(
        bootstrap_servers=setup.bootstrap,
        topic_prefix=f"{setup.prefix}-",
        model_chunk_bytes=CHUNK_BYTES,
        **overrides,
    )


def perturbed(model: TrainedModel, version: str, scale: float) -> TrainedModel:
    """The same model with slightly different params under another version name."""
    params = copy.deepcopy(model.params)
    params["item_bias"] = params["item_bias"] + np.float32(scale)
    params["item_out"] = params["item_out"] * np.float32(1.0 + scale)
    return dataclasses.replace(model, params=params, version=version)


# ------------------------------------------------------------------------- helpers


def wait_for(check: Callable[[], bool], what: str, setups: list[WorkerSetup], timeout_s=90.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    logs = "\n---\n".join(tail(s.log) for s in setups)
    raise AssertionError(f"timed out waiting for {what}:\n{logs}")


def version_ready(setup: WorkerSetup, version: str) -> bool:
    """Staged (waiting for the next batch) or already serving."""
    return (
        metric(setup, "rnnrec_model_staged_info", version=version) == 1
        or metric(setup, "rnnrec_model_version_info", version=version) == 1
    )


def follower_read_to_the_end(setup: WorkerSetup, settings: WorkerSettings) -> None:
    """Wait until the worker's model follower has read and judged all of model-updates."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    try:
        tp = TopicPartition(settings.topic("model_updates"), 0)
        end = consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()
    wait_for(
        lambda: metric(setup, "rnnrec_model_updates_read_offset") >= end,
        f"the follower at offset {end}",
        [setup],
    )


class Clicks:
    """Events for a fixed set of users, one continuing session each."""

    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.count: dict[str, int] = {}
        self.ts = time.time() - 3600

    def make(self, users: list[str], per_user: int = 1) -> list[tuple[bytes, bytes]]:
        records = []
        for _ in range(per_user):
            for user in users:
                n = self.count.get(user, 0)
                self.count[user] = n + 1
                self.ts += 1.0
                item = self.items[(hash(user) + n) % len(self.items)]
                records.append(click(user, f"{user}-{n}", item, self.ts, session_id=f"s-{user}"))
        return records


def send_and_read(
    setup: WorkerSetup, records: list, total: int, proc: subprocess.Popen
) -> list[dict]:
    """Produce ``records`` and return their recommendation documents (by event id)."""
    produce(setup.bootstrap, setup.topic("clickstream"), records)
    outputs = read_outputs(setup, "recommendations", total, proc)
    wanted = {orjson.loads(v)["event_id"] for _, v in records}
    by_id = {}
    for record in outputs:
        document = orjson.loads(record.value)
        document["_partition"] = record.partition
        by_id[document["event_id"]] = document
    return [by_id[e] for e in sorted(wanted)]


def second_worker(setup: WorkerSetup, name: str) -> WorkerSetup:
    """Another worker process of the same app (same group and topics)."""
    root = setup.log.parent / name
    root.mkdir()
    return dataclasses.replace(
        setup, port=free_port(), log=root / "worker.log", data_dir=root / "faust-data"
    )


# --------------------------------------------------------------------------- tests


@pytest.mark.slow  # two worker processes: about a minute on a busy 2-core machine
def test_published_versions_reach_two_workers_and_rollback_returns(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path, tiny: tuple
) -> None:
    model_dir, base = tiny
    a = make_setup(kafka_bootstrap, unique_name, tmp_path, partitions=2)
    b = second_worker(a, "b")
    settings = settings_for(a)
    # The topic's serving version wins over RNNREC_MODEL_SOURCE (version "1").
    assert publish_model(settings, dataclasses.replace(base, version="v1")) == "v1"
    clicks = Clicks(list(base.vocab.items[:60]))
    old_users = [f"u{i}" for i in range(8)]
    env = {**MODEL_ENV, "RNNREC_MODEL_SOURCE": str(model_dir)}
    with (
        running_process(WORKER_ARGS, a.env(**env), a.log) as proc_a,
        running_process(WORKER_ARGS, b.env(**env), b.log) as proc_b,
    ):
        wait_ready(a, proc_a)
        wait_ready(b, proc_b)
        first = send_and_read(a, clicks.make(old_users, per_user=2), 16, proc_a)
        assert {o["model_version"] for o in first} == {"v1"}
        # Both workers serve: each owns one of the two partitions.
        assert {o["_partition"] for o in first} == {0, 1}

        assert publish_model(settings, perturbed(base, "v2", 0.01)) == "v2"
        wait_for(lambda: version_ready(a, "v2") and version_ready(b, "v2"), "v2 staged", [a, b])
        new_users = ["n0", "n1", "n2", "n3"]
        second = send_and_read(a, clicks.make(old_users) + clicks.make(new_users), 28, proc_a)
        assert {o["model_version"] for o in second} == {"v2"}
        assert {o["_partition"] for o in second} == {0, 1}
        by_user = {o["user_id"]: o for o in second}
        # Carries made by v1 are rebuilt under v2; new users have nothing to rebuild.
        assert all(by_user[u]["state_recomputed"] for u in old_users)
        assert not any(by_user[u]["state_recomputed"] for u in new_users)
        for setup in (a, b):
            assert metric(setup, "rnnrec_model_swaps_total") == 1
            assert metric(setup, "rnnrec_events_served_total", model_version="v2") > 0
            assert metric(setup, "rnnrec_events_served_total", model_version="v1") > 0
            assert metric(setup, "rnnrec_model_version_info", version="v2") == 1

        rolled = subprocess.run(
            [sys.executable, "-m", "stream_app.cli", "model", "rollback", "--to", "v1"],
            env={**os.environ, **a.env()}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert rolled.returncode == 0, rolled.stderr
        wait_for(lambda: version_ready(a, "v1") and version_ready(b, "v1"), "v1 staged", [a, b])
        third = send_and_read(a, clicks.make(old_users + new_users), 40, proc_a)
        assert {o["model_version"] for o in third} == {"v1"}
        assert all(o["state_recomputed"] for o in third)  # every carry came from v2
        assert {o["_partition"] for o in third} == {0, 1}


def test_a_version_with_another_carry_layout_rebuilds_every_stored_user(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    tiny: tuple,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A retrained model may have another hidden size: its carries are not the stored
    # ones' size, and stacking both in one step call failed every batch with a user
    # who had state (every such event then went to the DLQ).
    model_dir, base = tiny
    _, train_df, _ = cached_tiny_model(tmp_path_factory)
    wider = train_tiny(train_df, tmp_path / "wider", epochs=1, version="v2", hidden_sizes=(96,))
    assert wider.model_cfg.hidden_sizes != base.model_cfg.hidden_sizes
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, partitions=1)
    settings = settings_for(setup)
    publish_model(settings, dataclasses.replace(base, version="v1"))
    clicks = Clicks([i for i in base.vocab.items[:60] if i in set(wider.vocab.items)])
    users = [f"u{i}" for i in range(6)]
    env = {**MODEL_ENV, "RNNREC_MODEL_SOURCE": str(model_dir)}
    with running_worker(setup, **env) as proc:
        first = send_and_read(setup, clicks.make(users, per_user=2), 12, proc)
        assert {o["model_version"] for o in first} == {"v1"}
        publish_model(settings, wider)
        wait_for(lambda: version_ready(setup, "v2"), "v2 staged", [setup])
        # Old users (stored v1 carries) and a new one in the same batches.
        second = send_and_read(setup, clicks.make([*users, "n0"], per_user=2), 26, proc)
        failures = metric(setup, "rnnrec_batch_failures_total", scope="batch")
        dead = read_outputs(setup, "dlq", 0, proc, timeout_s=3)
    assert {o["model_version"] for o in second} == {"v2"}
    first_of = {o["user_id"]: o for o in reversed(second)}
    assert all(first_of[u]["state_recomputed"] for u in users)
    assert not first_of["n0"]["state_recomputed"]
    assert failures == 0 and dead == []


def write_records(
    settings: WorkerSettings,
    version: str,
    manifest: dict,
    chunks: dict[int, bytes],
    point: bool = True,
) -> None:
    """Write a (possibly broken) version and, by default, point the serving pointer at it."""
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", max_request_size=8 << 20
    )
    topic = settings.topic("model_updates")
    base = f"{settings.model_name}/{version}"
    try:
        for i, chunk in chunks.items():
            producer.send(topic, key=f"{base}/chunk/{i}".encode(), value=chunk)
        producer.send(topic, key=f"{base}/manifest".encode(), value=canonical_json(manifest))
        if point:
            pointer = {"version": version, "updated": time.time(), "reason": "test"}
            producer.send(
                topic, key=f"{settings.model_name}/serving".encode(), value=canonical_json(pointer)
            )
        producer.flush()
    finally:
        producer.close()


def bad_artifacts(
    model: TrainedModel, key: Any, foreign_key: Any
) -> list[tuple[str, str, dict, dict[int, bytes]]]:
    """(reason, version, manifest, chunks) of one broken artifact per refusal reason."""

    def packed(version: str, m: TrainedModel | None = None) -> tuple[dict, dict[int, bytes]]:
        m = dataclasses.replace(m or model, version=version)
        manifest, chunks = pack_model(m, chunk_bytes=CHUNK_BYTES, name="rnnrec")
        return manifest, dict(enumerate(chunks))

    out = []
    manifest, chunks = packed("bad-sig")
    out.append(("bad_signature", "bad-sig", sign_manifest(manifest, foreign_key), chunks))
    manifest, chunks = packed("unsigned")
    out.append(("unsigned", "unsigned", manifest, chunks))
    nan = copy.deepcopy(model.params)
    nan["item_out"][7, 3] = np.nan
    manifest, chunks = packed("nan", dataclasses.replace(model, params=nan))
    out.append(("non_finite", "nan", sign_manifest(manifest, key), chunks))
    manifest, chunks = packed("missing")
    assert len(chunks) >= 3, "the model must span several chunks"
    del chunks[1]
    out.append(("missing_chunk", "missing", sign_manifest(manifest, key), chunks))
    manifest, chunks = packed("corrupt")
    chunks[1] = chunks[1][:100] + bytes([chunks[1][100] ^ 0xFF]) + chunks[1][101:]
    out.append(("chunk_checksum", "corrupt", sign_manifest(manifest, key), chunks))
    manifest, chunks = packed("total")
    manifest["sha256"] = "0" * 64
    out.append(("checksum", "total", sign_manifest(manifest, key), chunks))
    short = copy.deepcopy(model.params)
    short["item_bias"] = short["item_bias"][:-1]
    manifest, chunks = packed("shape", dataclasses.replace(model, params=short))
    out.append(("shape_mismatch", "shape", sign_manifest(manifest, key), chunks))
    manifest, chunks = packed("vocab")
    items = manifest["vocabulary"]["items"]
    items[1] = items[0]
    out.append(("vocabulary_mismatch", "vocab", sign_manifest(manifest, key), chunks))
    return out


def test_bad_artifacts_and_killed_publishers_never_replace_the_served_model(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path, tiny: tuple
) -> None:
    model_dir, base = tiny
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, partitions=1)
    private, public = write_keypair(tmp_path / "keys")
    foreign, _ = write_keypair(tmp_path / "foreign")
    key, foreign_key = load_private_key(private), load_private_key(foreign)
    settings = settings_for(setup, model_signing_key=private)
    assert publish_model(settings, dataclasses.replace(base, version="good"), serve=False)
    # The pointer names an incomplete version at start: the worker refuses it, counts
    # it, and serves RNNREC_MODEL_SOURCE (version "1") instead.
    manifest, chunks = pack_model(
        dataclasses.replace(base, version="broken"), chunk_bytes=CHUNK_BYTES, name="rnnrec"
    )
    write_records(settings, "broken", sign_manifest(manifest, key), {0: chunks[0]})
    clicks = Clicks(list(base.vocab.items[:60]))
    env = {
        **MODEL_ENV,
        "RNNREC_MODEL_SOURCE": str(model_dir),
        "RNNREC_MODEL_VERIFY_KEY": str(public),
    }
    total = 0
    with running_worker(setup, **env) as proc:
        assert metric(setup, "rnnrec_model_rejections_total", reason="missing_chunk") == 1

        def still_serving_the_old_model() -> None:
            nonlocal total
            total += 1
            (out,) = send_and_read(setup, clicks.make(["u1"]), total, proc)
            assert out["model_version"] == "1", tail(setup.log)

        still_serving_the_old_model()
        bad = bad_artifacts(base, key, foreign_key)
        for reason, version, manifest, chunks in bad:
            before = metric(setup, "rnnrec_model_rejections_total", reason=reason)
            write_records(settings, version, manifest, chunks)
            wait_for(
                lambda r=reason, n=before: (
                    metric(setup, "rnnrec_model_rejections_total", reason=r) == n + 1
                ),
                f"the {reason} rejection",
                [setup],
            )
            still_serving_the_old_model()
        log_text = setup.log.read_text()
        assert "model version nan refused (non_finite)" in log_text
        assert "u1" not in log_text  # no user ids in the logs

        # A publisher killed after its chunks, and one killed after its manifest.
        for version, step in (("killed-chunks", "manifest"), ("killed-manifest", "pointer")):
            args = ["-m", "tests.integration.model_publisher_proc", str(model_dir), version, step]
            env_pub = {**setup.env(), "RNNREC_MODEL_CHUNK_BYTES": str(CHUNK_BYTES)}
            with subprocess.Popen(
                [sys.executable, *args], env={**os.environ, **env_pub},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            ) as publisher:  # fmt: skip
                assert publisher.stdout is not None
                for line in publisher.stdout:
                    if "HANGING" in line:
                        break
                publisher.send_signal(signal.SIGKILL)
                publisher.wait(timeout=30)
            registry = read_registry(settings)
            # The pointer still names the last (refused) version written before.
            assert registry.serving is not None and registry.serving.version == bad[-1][1]
            entry = registry.versions[version]
            assert entry.chunks and entry.has_manifest == (step == "pointer")
        follower_read_to_the_end(setup, settings)  # it has seen the leftovers
        still_serving_the_old_model()
        assert metric(setup, "rnnrec_model_swaps_total") == 0

        # The follower is alive: a valid signed version pointed to is swapped in.
        out = subprocess.run(
            [sys.executable, "-m", "stream_app.cli", "model", "rollback", "--to", "good"],
            env={**os.environ, **setup.env(), "RNNREC_MODEL_VERIFY_KEY": str(public)},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        wait_for(lambda: version_ready(setup, "good"), "the good version staged", [setup])
        total += 1
        (last,) = send_and_read(setup, clicks.make(["u1"]), total, proc)
        assert last["model_version"] == "good" and last["state_recomputed"]
        assert metric(setup, "rnnrec_model_swaps_total") == 1


def test_a_worker_started_while_the_pointed_version_is_refused_serves_the_previous_one(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path, tiny: tuple
) -> None:
    # Running workers refuse a bad pointed version and keep serving the one before; a
    # worker (re)started then must serve that same version, not another checkpoint, and
    # must start at all when it has no RNNREC_MODEL_SOURCE.
    _, base = tiny
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, partitions=1)
    private, public = write_keypair(tmp_path / "keys")
    foreign, _ = write_keypair(tmp_path / "foreign")
    good = publish_model(
        settings_for(setup, model_signing_key=private), dataclasses.replace(base, version="good")
    )
    # Published with the wrong key: every worker that verifies refuses it.
    bad = publish_model(
        settings_for(setup, model_signing_key=foreign), perturbed(base, "wrong-key", 0.01)
    )
    registry = read_registry(settings_for(setup))
    assert registry.serving is not None
    assert registry.serving.candidates() == [bad, good]
    # The trainer starts from the same version (it fine-tunes what workers serve).
    verifying = settings_for(setup, model_verify_key=public)
    assert load_serving_model_from_topic(verifying).version == good
    env = {**MODEL_ENV, "RNNREC_MODEL_SOURCE": "", "RNNREC_MODEL_VERIFY_KEY": str(public)}
    clicks = Clicks(list(base.vocab.items[:60]))
    with running_worker(setup, **env) as proc:
        assert metric(setup, "rnnrec_model_rejections_total", reason="bad_signature") == 1
        assert metric(setup, "rnnrec_model_version_info", version=good) == 1
        (out,) = send_and_read(setup, clicks.make(["u1"]), 1, proc)
        assert out["model_version"] == good
        follower_read_to_the_end(setup, settings_for(setup))  # no retry of the refused one
        assert metric(setup, "rnnrec_model_rejections_total", reason="bad_signature") == 1
        assert "serving good, the newest earlier version that validates" in setup.log.read_text()


def test_pruning_keeps_the_newest_versions_and_the_pointers_fallbacks(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path, tiny: tuple
) -> None:
    _, base = tiny
    setup = make_setup(kafka_bootstrap, unique_name, tmp_path, partitions=1)
    settings = settings_for(setup, model_keep_versions=2)
    for i, version in enumerate(("a", "b", "c", "d")):
        assert publish_model(settings, perturbed(base, version, 0.01 * i)) == version
    registry = read_registry(settings)
    assert registry.serving is not None and registry.serving.candidates() == ["d", "c", "b"]
    # The two newest, plus b: the newest fallback a restarted worker may need.
    assert [e.version for e in registry.published()] == ["b", "c", "d"]
    assert "a" not in registry.versions  # manifest and chunks tombstoned
    # A version published without serving does not push the fallbacks out.
    assert publish_model(settings, perturbed(base, "e", 0.05), serve=False) == "e"
    registry = read_registry(settings)
    assert registry.serving.candidates() == ["d", "c", "b"]
    assert [e.version for e in registry.published()] == ["b", "c", "d", "e"]


def rnnrec(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream_app.cli", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_model_cli_publishes_lists_rolls_back_and_refuses_in_one_line(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path, tiny: tuple
) -> None:
    model_dir, _ = tiny
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "RNNREC_TOPIC_PREFIX": unique_name("cli") + "-",
        "RNNREC_MODEL_CHUNK_BYTES": str(CHUNK_BYTES),
    }

    def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rnnrec: error:"), result.stderr
        for fragment in fragments:
            assert fragment in lines[0], lines[0]

    one_line_error(rnnrec(env, "model", "list"), "does not exist")
    keys = rnnrec(env, "model", "keygen", str(tmp_path / "keys"))
    assert keys.returncode == 0, keys.stderr
    signing = tmp_path / "keys" / "model-signing-key.pem"
    assert oct(signing.stat().st_mode & 0o777) == "0o600"
    one_line_error(rnnrec(env, "model", "keygen", str(tmp_path / "keys")), "already exists")

    first = rnnrec(env, "model", "publish", str(model_dir), "--signing-key", str(signing))
    assert first.returncode == 0, first.stderr
    assert "published rnnrec/1 " in first.stdout
    second = rnnrec(env, "model", "publish", str(model_dir), "--no-serve")
    assert second.returncode == 0, second.stderr
    taken = re.search(r"published rnnrec/(v\d+) \(version 1 was taken\)", second.stdout)
    assert taken, second.stdout
    listed = rnnrec(env, "model", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    rows = {row["version"]: row for row in document["versions"]}
    assert document["serving"]["version"] == "1"
    assert rows["1"]["signed"] and not rows[taken.group(1)]["signed"]
    assert rows["1"]["serving"] and rows["1"]["state"] == "complete"
    text = rnnrec(env, "model", "list")
    assert text.returncode == 0 and "* serving rnnrec/1" in text.stdout

    back = rnnrec(env, "model", "rollback", "--to", taken.group(1))
    assert back.returncode == 0, back.stderr
    listed = json.loads(rnnrec(env, "model", "list", "--json").stdout)
    assert listed["serving"] == {
        **listed["serving"],
        "version": taken.group(1),
        "reason": "rollback",
    }

    one_line_error(rnnrec(env, "model", "rollback", "--to", "v404"), "unknown version 'v404'")
    one_line_error(rnnrec(env, "model", "publish", str(tmp_path / "nothing")), "no such")
    one_line_error(rnnrec(env, "model", "publish", str(tmp_path / "keys")), "refused")
    one_line_error(
        rnnrec(env, "model", "publish", str(model_dir), "--signing-key", str(tmp_path / "no.pem")),
        "cannot read the signing key",
    )
    # A worker-side verify key makes unsigned versions unacceptable to roll back to.
    verify = {**env, "RNNREC_MODEL_VERIFY_KEY": str(tmp_path / "keys" / "model-verify-key.pem")}
    one_line_error(rnnrec(verify, "model", "rollback", "--to", taken.group(1)), "unsigned")
    assert rnnrec(verify, "model", "rollback", "--to", "1").returncode == 0


class NamedScorer:
    """Stands in for a built scorer: the follower only needs its version here."""

    def __init__(self, version: str) -> None:
        self.version = version


def test_follower_waits_for_the_topic_and_stages_only_the_current_pointer(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tiny: tuple
) -> None:
    from stream_app.metrics import WorkerMetrics
    from stream_app.model_follower import ModelFollower
    from stream_app.model_registry import set_serving

    _, base = tiny
    settings = load_settings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=unique_name("f") + "-",
        model_chunk_bytes=CHUNK_BYTES,
    )

    def follower(built: list[str]) -> ModelFollower:
        def build(model: TrainedModel) -> NamedScorer:
            built.append(model.version)
            return NamedScorer(model.version)

        return ModelFollower(settings, WorkerMetrics(), build, "1", retry_s=0.2)

    def staged(f: ModelFollower) -> str | None:
        text = f.metrics.exposition().decode()
        match = re.search(r'^rnnrec_model_staged_info\{version="([^"]+)"\} 1', text, re.M)
        return match.group(1) if match else None

    def wait(check: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    built: list[str] = []
    first = follower(built)
    first.start()
    try:
        time.sleep(1.0)  # no topic yet: nothing to stage, and the thread keeps trying
        assert first.take_pending() is None
        publish_model(settings, perturbed(base, "v2", 0.01))  # creates the topic
        scorer = wait(first.take_pending, "v2 staged")
        assert scorer.version == "v2" and first.served_version == "v2"
        publish_model(settings, perturbed(base, "v3", 0.02))
        wait(lambda: staged(first) == "v3", "v3 staged")
        # The pointer moves back before the worker took v3: v3 is dropped.
        set_serving(settings, "v2", "changed my mind")
        wait(lambda: staged(first) is None, "v3 dropped")
        assert first.take_pending() is None
        assert built == ["v2", "v3"]
    finally:
        first.stop()

    # A follower starting later judges the whole history: it builds only v2.
    later: list[str] = []
    second = follower(later)
    second.start()
    try:
        assert wait(second.take_pending, "v2 staged").version == "v2"
        assert later == ["v2"]
    finally:
        second.stop()
