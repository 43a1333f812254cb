"""Run the serving worker as a real process against the test broker, and read its outputs."""

from __future__ import annotations

import itertools
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

import orjson

from stream_app.kafka_io import Record, create_topics, drain
from tests import prom
from tests.processes import running_process, tail
from tests.prom import Samples

WORKER_ARGS = ["-m", "stream_app.cli", "worker", "-l", "info"]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WorkerSetup:
    """Topic names and environment of one test's worker."""

    bootstrap: str
    prefix: str
    partitions: int
    data_dir: Path
    log: Path
    port: int
    extra_env: dict[str, str]

    def topic(self, role: str) -> str:
        """The test's name of a topic role (``clickstream``, ``recommendations``...)."""
        names = {
            "clickstream": "clickstream",
            "recommendations": "recommendations",
            "purchase_predictions": "purchase-predictions",
            "dlq": "clickstream-dlq",
            "clickstream_repartition": "clickstream-repartition",
        }
        return f"{self.prefix}-{names[role]}"

    @property
    def app_id(self) -> str:
        """The worker's Faust app id (its consumer group)."""
        return f"{self.prefix}-app"

    def env(self, **overrides: str) -> dict[str, str]:
        """Environment of the worker process."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "RNNREC_TOPIC_PREFIX": f"{self.prefix}-",
            "RNNREC_APP_ID": self.app_id,
            "RNNREC_PARTITIONS": str(self.partitions),
            "RNNREC_SCORER_FACTORY": "tests.worker_scorers:recent_items_scorer",
            "RNNREC_DATA_DIR": str(self.data_dir),
            "RNNREC_WEB_PORT": str(self.port),
            "RNNREC_COMMIT_INTERVAL_S": "0.3",
            "RNNREC_MAX_WAIT_S": "0.05",
            **self.extra_env,
        }
        env.update(overrides)
        return env

    def url(self, path: str) -> str:
        """URL of one of the worker's web views."""
        return f"http://127.0.0.1:{self.port}{path}"


_SETUP_NUMBERS = itertools.count()


def make_setup(
    bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    partitions: int = 2,
    **extra_env: str,
) -> WorkerSetup:
    """Unique topics (clickstream created with the worker's partitions), app id and
    group: each call its own, also within one test (a second worker of the same app is
    `dataclasses.replace` of the first)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    setup = WorkerSetup(
        bootstrap=bootstrap,
        # unique_name gives one name per role and test: a second setup in the same test
        # would otherwise share the first one's topics, group and changelog.
        prefix=unique_name(f"w{next(_SETUP_NUMBERS)}"),
        partitions=partitions,
        data_dir=tmp_path / "faust-data",
        log=tmp_path / "worker.log",
        port=free_port(),
        extra_env=dict(extra_env),
    )
    create_topics(bootstrap, [setup.topic("clickstream")], partitions=partitions)
    return setup


def get_json(url: str, timeout_s: float = 2.0) -> tuple[int, dict]:
    """GET a JSON view; ``(status, body)``, status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, {}


def wait_ready(setup: WorkerSetup, proc: Popen, timeout_s: float = 90.0) -> list[dict]:
    """Poll ``/ready`` until it says ready; return every answer seen (for tests of it)."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"worker exited early:\n{tail(setup.log)}"
        status, body = get_json(setup.url("/ready"), timeout_s=1.0)
        if status:
            seen.append({"status": status, **body})
            if status == 200 and body.get("ready"):
                return seen
        time.sleep(0.05)
    raise AssertionError(f"worker not ready in {timeout_s}s:\n{tail(setup.log)}")


@contextmanager
def running_worker(setup: WorkerSetup, **env_overrides: str) -> Iterator[Popen]:
    """Start ``rnnrec worker``, wait until ready, SIGTERM it on exit of the block."""
    with running_process(WORKER_ARGS, setup.env(**env_overrides), setup.log) as proc:
        wait_ready(setup, proc)
        yield proc


def read_outputs(
    setup: WorkerSetup, role: str, expected: int, proc: Popen | None = None, timeout_s: float = 60
) -> list[Record]:
    """Read a topic from the start until ``expected`` records arrived (then a short grace)."""
    deadline = time.monotonic() + timeout_s
    records: list[Record] = []
    while time.monotonic() < deadline:
        if proc is not None:
            assert proc.poll() is None, f"worker exited early:\n{tail(setup.log)}"
        records = drain(setup.bootstrap, setup.topic(role), expected=expected, timeout_s=3)
        if len(records) >= expected:
            break
    assert len(records) >= expected, (
        f"{role}: got {len(records)} of {expected} ({_event_ids(records)}):\n{tail(setup.log)}"
    )
    return sorted(records, key=lambda r: (r.partition, r.offset))


def read_all(setup: WorkerSetup, role: str, idle_s: float = 1.5) -> list[Record]:
    """Every record of a topic, read until nothing new came for ``idle_s``.

    For exactly-once checks after the worker stopped: `read_outputs` returns as soon as
    it has the records it expects, so a late duplicate would not be in its answer.
    """
    records = drain(setup.bootstrap, setup.topic(role), idle_s=idle_s, timeout_s=60)
    return sorted(records, key=lambda r: (r.partition, r.offset))


def _event_ids(records: list[Record]) -> str:
    """Which events the records answer, to tell from a failure what is missing."""
    ids = []
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        try:
            ids.append(f"{record.partition}:{orjson.loads(record.value)['event_id']}")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            ids.append(f"{record.partition}@{record.offset}")
    return ", ".join(ids[:60]) + (" ..." if len(ids) > 60 else "")


def click(user: str, event_id: str, item: str, ts: float, **fields: object) -> tuple[bytes, bytes]:
    """A valid clickstream record ``(key, value)``."""
    document = {"event_id": event_id, "user_id": user, "item_id": item, "ts": ts, **fields}
    return user.encode(), orjson.dumps(document)


def scrape(setup: WorkerSetup) -> Samples:
    """Every sample of /metrics by (name, labels)."""
    with urllib.request.urlopen(setup.url("/metrics"), timeout=5) as response:
        return prom.parse(response.read().decode())


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample of a `scrape`: 0 when absent, an error when the metric is not exported."""
    return prom.value(samples, name, **labels)


def metric(setup: WorkerSetup, name: str, **labels: str) -> float:
    """One sample of the worker's /metrics by its exact labels (see `value`)."""
    return value(scrape(setup), name, **labels)
