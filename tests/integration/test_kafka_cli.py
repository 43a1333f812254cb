"""`rnnrec kafka up|down|status|logs` tell the truth and fail with one clear line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stream_app.kafka_local import LocalBroker, _pid_alive, external_bootstrap


def rnnrec(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    """Run the CLI as a user would (a fresh interpreter, real exit code)."""
    full_env = dict(os.environ)
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "RNNREC_KAFKA_BOOTSTRAP_SERVERS"):
        full_env.pop(name, None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "stream_app.cli", *args],
        capture_output=True, text=True, env=full_env, timeout=timeout, check=False,
    )  # fmt: skip


def free_port_pair() -> int:
    """A port p such that p and p+1 are both free right now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


needs_local_broker = pytest.mark.skipif(
    external_bootstrap() is not None,
    reason="KAFKA_BOOTSTRAP_SERVERS points at an external cluster: no local broker is controlled",
)


@needs_local_broker
def test_up_is_idempotent_status_is_true_and_down_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The state folder is the one RNNREC_KAFKA_STATE_DIR names (CI relies on it).
    monkeypatch.setenv("RNNREC_KAFKA_STATE_DIR", str(tmp_path / "state"))
    port = free_port_pair()
    first = rnnrec("kafka", "up", "--port", str(port))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().endswith(f"127.0.0.1:{port}")
    broker = LocalBroker(port=port)
    assert broker.state_dir == tmp_path / "state" / f"broker-{port}"
    assert (broker.state_dir / "data" / "meta.properties").exists()
    pid = broker.pid()
    assert pid is not None and _pid_alive(pid)
    try:
        again = rnnrec("kafka", "up", "--port", str(port))
        assert again.returncode == 0, again.stderr
        assert broker.pid() == pid, "a second `up` must reuse the running broker"
        status = rnnrec("kafka", "status", "--port", str(port))
        assert status.returncode == 0 and "ready" in status.stdout
        logs = rnnrec("kafka", "logs", "--port", str(port), "-n", "20")
        assert "Kafka" in logs.stdout
    finally:
        down = rnnrec("kafka", "down", "--port", str(port))
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not _pid_alive(pid), "the broker process must be gone after `down`"
    after = rnnrec("kafka", "status", "--port", str(port))
    assert after.returncode == 1 and "not running" in after.stdout
    assert "not running" in rnnrec("kafka", "down", "--port", str(port)).stdout
    reset = rnnrec("kafka", "reset", "--yes", "--port", str(port))
    assert reset.returncode == 0 and "deleted" in reset.stdout
    assert not broker.state_dir.exists(), "`reset` must delete the broker's data"


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.unit
def test_bad_argument_gives_one_line() -> None:
    proc = rnnrec("kafka", "up", "--port", "not-a-port")
    assert proc.returncode == 2
    assert "--port" in _one_line_error(proc)


@pytest.mark.unit
def test_taken_port_gives_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = rnnrec("kafka", "up", "--port", str(port))
    assert proc.returncode == 1
    assert "taken" in _one_line_error(proc)


@pytest.mark.unit
def test_missing_java_gives_one_line(tmp_path: Path) -> None:
    proc = rnnrec("kafka", "up", "--port", str(free_port_pair()), env={"PATH": str(tmp_path)})
    assert proc.returncode == 1
    assert "Java" in _one_line_error(proc)


@pytest.mark.unit
def test_missing_maven_gives_one_line(tmp_path: Path) -> None:
    java = shutil.which("java")
    if java is None:
        pytest.skip("no java on this machine")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(java)
    proc = rnnrec(
        "kafka", "up", "--port", str(free_port_pair()),
        env={"PATH": str(bin_dir), "RNNREC_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Maven" in _one_line_error(proc)


@pytest.mark.unit
def test_external_cluster_starts_nothing(tmp_path: Path) -> None:
    proc = rnnrec(
        "kafka", "up", env={"KAFKA_BOOTSTRAP_SERVERS": "broker.example:9092",
                            "RNNREC_CACHE_DIR": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0
    assert "external" in proc.stdout
    assert not any(tmp_path.iterdir()), "nothing may be fetched or started"
