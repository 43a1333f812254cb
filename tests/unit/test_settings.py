"""Worker settings: environment binding, defaults, and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from stream_app.settings import (
    BOOTSTRAP_VARIABLES,
    CarryDtype,
    EventLoop,
    SessionPolicy,
    SettingsError,
    WorkerSettings,
    load_settings,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in BOOTSTRAP_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_follow_the_design() -> None:
    s = load_settings()
    assert s.topic("clickstream") == "clickstream"
    assert s.topic("purchase_predictions") == "purchase-predictions"
    assert s.topic("dlq") == "clickstream-dlq"
    assert (s.partitions, s.top_k, s.exclude_seen) == (6, 20, False)
    assert s.session_policy is SessionPolicy.NEW_SESSION_ID
    assert s.carry_dtype is CarryDtype.FLOAT32
    assert s.store == "memory://"
    assert s.event_loop is EventLoop.UVLOOP


def test_environment_binds_with_prefix_and_common_bootstrap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "a:1, b:2")
    monkeypatch.setenv("RNNREC_BUCKET_SIZES", "4,16,64")
    monkeypatch.setenv("RNNREC_TOPIC_PREFIX", "t-")
    monkeypatch.setenv("RNNREC_SESSION_POLICY", "carry_over")
    monkeypatch.setenv("RNNREC_EXCLUDE_SEEN", "true")
    s = load_settings()
    assert s.bootstrap_servers == "a:1,b:2"
    assert s.broker_url == "kafka://a:1;kafka://b:2"
    assert s.bucket_sizes == (4, 16, 64) and s.largest_bucket == 64
    assert s.topic("recommendations") == "t-recommendations"
    assert s.session_policy is SessionPolicy.CARRY_OVER
    assert s.exclude_seen is True


def test_rnnrec_bootstrap_wins_over_the_common_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "common:1")
    monkeypatch.setenv("RNNREC_BOOTSTRAP_SERVERS", "mine:2")
    assert load_settings().bootstrap_servers == "mine:2"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RNNREC_BUCKET_SIZES", "32,8", "strictly increasing"),
        ("RNNREC_STORE", "redis://", "memory:// or rocksdb://"),
        ("RNNREC_PARTITIONS", "0", "greater than or equal to 1"),
        ("RNNREC_TOP_K", "many", "valid integer"),
        ("RNNREC_SESSION_POLICY", "sometimes", "new_session_id"),
        ("RNNREC_TOPIC_CLICKSTREAM", "bad topic!", "a-zA-Z0-9"),
        ("RNNREC_BOOTSTRAP_SERVERS", "nohostport", "host:port"),
        # The message names the variable that was set, not the first alias.
        ("KAFKA_BOOTSTRAP_SERVERS", "nohostport", "host:port"),
        ("RNNREC_MAX_WAIT_S", "-1", "greater than 0"),
        ("RNNREC_PRODUCER_LINGER_S", "-0.1", "greater than or equal to 0"),
        ("RNNREC_PRODUCER_MAX_BATCH_BYTES", "10", "greater than or equal to 1024"),
        ("RNNREC_EVENT_LOOP", "tokio", "'asyncio' or 'uvloop'"),
    ],
)
def test_nonsense_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(variable + ":") and message in text


def test_cross_field_rules() -> None:
    with pytest.raises(SettingsError, match="dlq_max_payload_bytes"):
        load_settings(max_message_bytes=1000, dlq_max_payload_bytes=2000)
    with pytest.raises(SettingsError, match="distinct"):
        load_settings(topic_recommendations="clickstream")


def test_settings_are_frozen() -> None:
    s = WorkerSettings()
    with pytest.raises(ValidationError, match="frozen"):
        s.top_k = 5  # type: ignore[misc]


def test_worker_cli_prints_a_bad_setting_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream_app.cli import main

    monkeypatch.setenv("RNNREC_STORE", "nope://")
    with pytest.raises(SystemExit) as exited:
        main(["worker"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == "rnnrec: error: RNNREC_STORE: must be memory:// or rocksdb://"


def test_state_table_has_no_standby_replicas_unless_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Off by default (settings.standby_replicas says why); the setting reaches Faust.
    from stream_app.worker import create_app
    from tests.worker_scorers import RecentItemsScorer

    monkeypatch.setenv("RNNREC_DATA_DIR", str(tmp_path))
    runtime = create_app(load_settings(), scorer=RecentItemsScorer())
    assert runtime.app.conf.table_standby_replicas == 0
    monkeypatch.setenv("RNNREC_STANDBY_REPLICAS", "1")
    monkeypatch.setenv("RNNREC_APP_ID", "rnnrec-standby-test")
    runtime = create_app(load_settings(), scorer=RecentItemsScorer())
    assert runtime.app.conf.table_standby_replicas == 1


def test_producer_batching_settings_reach_faust_and_its_producer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Faust's defaults (no linger, 16 kB batches) are what the settings replace.
    from stream_app.worker import create_app
    from tests.worker_scorers import RecentItemsScorer

    monkeypatch.setenv("RNNREC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RNNREC_APP_ID", "rnnrec-producer-test")
    monkeypatch.setenv("RNNREC_PRODUCER_LINGER_S", "0.02")
    monkeypatch.setenv("RNNREC_PRODUCER_MAX_BATCH_BYTES", "65536")
    runtime = create_app(load_settings(), scorer=RecentItemsScorer())
    assert runtime.app.conf.producer_linger == 0.02
    assert runtime.app.conf.producer_max_batch_size == 65536
    # What aiokafka is built with (Faust converts the linger to milliseconds).
    config = runtime.app.producer._settings_default()
    assert config["linger_ms"] == 20 and config["max_batch_size"] == 65536


def test_the_default_data_dir_is_one_per_app_id(monkeypatch: pytest.MonkeyPatch) -> None:
    # One default for every app made two apps on a host share their RocksDB files.
    monkeypatch.delenv("RNNREC_DATA_DIR", raising=False)
    a, b = load_settings(app_id="shop-a"), load_settings(app_id="shop-b")
    assert a.state_dir != b.state_dir
    assert a.state_dir.name == "shop-a"
    assert load_settings(data_dir=Path("/data/worker")).state_dir == Path("/data/worker")
    from stream_app.worker import faust_app_options

    assert faust_app_options(a)["datadir"] == str(a.state_dir)
