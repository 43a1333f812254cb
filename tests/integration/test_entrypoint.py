"""The image's entrypoint (``rnnrec worker``) with the deploy/base settings becomes ready.

As in the cluster, the topics Job (``python -m stream_app.topics``) creates the topics
first and the worker, with ``RNNREC_CREATE_TOPICS=false``, only checks them.

The container runs ``ENTRYPOINT ["rnnrec"]`` with ``CMD ["worker"]`` and its settings
from the ``rnnrec-settings`` ConfigMap (``deploy/base/settings.env``). Here the same
command line runs outside a container from the installed venv, with those values
adjusted only where a test must: the local broker, unique topics and group, a free
port, a tmp data dir, and the test-double scorer (no model is mounted).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from stream_app.kafka_io import drain, produce
from tests.processes import stop, tail
from tests.worker_harness import click, free_port, get_json

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_ENV = ROOT / "deploy" / "base" / "settings.env"


def configmap_values() -> dict[str, str]:
    """``KEY=VALUE`` lines of deploy/base/settings.env (comments and blanks skipped)."""
    values = {}
    for line in SETTINGS_ENV.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def entrypoint() -> str:
    """The installed ``rnnrec`` console script next to this interpreter."""
    script = Path(sys.executable).parent / "rnnrec"
    found = str(script) if script.exists() else shutil.which("rnnrec")
    if found is None:
        pytest.skip("the rnnrec console script is not installed (pip install -e .)")
    return found


def test_rnnrec_worker_with_the_configmap_settings_becomes_ready(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNREC_")}
    env.update(configmap_values())
    port = free_port()
    prefix = unique_name("ep")
    env.update(
        {
            # The cluster's address and the pod's writable /data are not here.
            "RNNREC_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "RNNREC_DATA_DIR": str(tmp_path / "data"),
            "RNNREC_WEB_PORT": str(port),
            "RNNREC_WEB_BIND": "127.0.0.1",
            # Per-test names on the shared broker; fewer partitions keep it quick.
            "RNNREC_TOPIC_PREFIX": f"{prefix}-",
            "RNNREC_APP_ID": f"{prefix}-app",
            "RNNREC_PARTITIONS": "2",
            # No model volume outside the cluster: the test double, importable from
            # the repository root (the console script does not put it on sys.path).
            "RNNREC_SCORER_FACTORY": "tests.worker_scorers:recent_items_scorer",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = tmp_path / "worker.log"
    # The topics Job runs first (RNNREC_CREATE_TOPICS=false: the worker creates none).
    job = subprocess.run(
        [sys.executable, "-m", "stream_app.topics", "--wait-s", "30"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr
    assert f"created {prefix}-recommendations" in job.stdout
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [entrypoint(), "worker"], env=env, cwd=tmp_path,
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        status, body = 0, {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"rnnrec worker exited:\n{tail(log)}"
            status, body = get_json(f"http://127.0.0.1:{port}/ready", timeout_s=1.0)
            if status == 200 and body.get("ready"):
                break
            time.sleep(0.2)
        assert status == 200 and body.get("ready"), f"not ready: {status} {body}\n{tail(log)}"
        # Ready means serving: one event in, its recommendation out.
        produce(kafka_bootstrap, f"{prefix}-clickstream", [click("u1", "e1", "7", 1.6e9)])
        (record,) = drain(kafka_bootstrap, f"{prefix}-recommendations", expected=1, timeout_s=30)
        assert orjson.loads(record.value)["event_id"] == "e1"
    finally:
        code = stop(proc, signal.SIGTERM, timeout_s=30)
    # SIGTERM, as the kubelet sends it: a clean exit.
    assert code == 0, tail(log)
