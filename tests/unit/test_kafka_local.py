"""The local broker helper: whose process it is, one start at a time, the port setting."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stream_app.kafka_local import LocalBroker, LocalBrokerError, local_port

pytestmark = pytest.mark.unit


@pytest.fixture
def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalBroker:
    monkeypatch.setenv("RNNREC_KAFKA_STATE_DIR", str(tmp_path))
    b = LocalBroker(port=29_092)
    b.state_dir.mkdir(parents=True)
    return b


def test_a_stale_pid_file_naming_another_process_is_not_the_broker(broker: LocalBroker) -> None:
    # After a kill -9 or a reboot the pid may belong to anything: `down` signalled it.
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        broker.pid_file.write_text(str(stranger.pid))
        assert broker.pid() is None
        assert broker.down() is False
        assert stranger.poll() is None, "down() signalled a process that is not the broker"
        assert not broker.pid_file.exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_a_process_running_this_folders_config_is_the_broker(broker: LocalBroker) -> None:
    config = broker.state_dir / "server.properties"
    fake = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "kafka.Kafka", str(config)]
    )
    try:
        broker.pid_file.write_text(str(fake.pid))
        assert broker.pid() == fake.pid
    finally:
        fake.kill()
        fake.wait()


def test_starts_are_one_at_a_time(broker: LocalBroker) -> None:
    order: list[str] = []
    holding = threading.Event()

    def hold() -> None:
        with broker._exclusive():
            order.append("first in")
            holding.set()
            time.sleep(0.5)
            order.append("first out")

    first = threading.Thread(target=hold)
    first.start()
    assert holding.wait(10)  # the thread holds the lock before we ask for it
    with broker._exclusive():
        order.append("second in")
    first.join()
    assert order == ["first in", "first out", "second in"]


@pytest.mark.parametrize(("value", "port"), [("", 19092), ("29092", 29092)])
def test_the_demo_takes_the_port_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, port: int
) -> None:
    monkeypatch.setenv("RNNREC_KAFKA_PORT", value)
    assert local_port() == port


def test_a_bad_port_variable_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNREC_KAFKA_PORT", "abc")
    with pytest.raises(LocalBrokerError, match="RNNREC_KAFKA_PORT"):
        local_port()


def test_the_lock_file_sits_beside_the_state(broker: LocalBroker) -> None:
    with broker._exclusive():
        assert (broker.state_dir.parent / f"{broker.state_dir.name}.lock").exists()
    assert os.path.isdir(broker.state_dir)
