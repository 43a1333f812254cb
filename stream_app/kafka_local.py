"""A real single-node Apache Kafka broker (KRaft) for development, tests and the demo.

The broker comes from the ``org.apache.kafka`` jars on Maven Central: a throwaway
POM is resolved once into a cache folder whose ``libs/`` plays the role of the
release tarball's. The broker runs as a detached JVM bound to 127.0.0.1; its pid,
config, data and log live in a state folder, so ``up`` is idempotent and ``down``
stops exactly the process that ``up`` started.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

KAFKA_VERSION = "4.1.1"
DEFAULT_PORT = 19092
BOOTSTRAP_ENV_VARS = ("RNNREC_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS")


class LocalBrokerError(RuntimeError):
    """The local broker could not be prepared, started or stopped.

    The message is one line meant for the operator: it names what is missing
    (Java, Maven, a free port) or where the broker log is.
    """


def external_bootstrap() -> str | None:
    """The bootstrap servers of an external cluster, if the environment names one.

    Returns:
        The value of ``RNNREC_KAFKA_BOOTSTRAP_SERVERS`` or ``KAFKA_BOOTSTRAP_SERVERS``,
        or None when neither is set (then the local broker is used).
    """
    for name in BOOTSTRAP_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def cache_root() -> Path:
    """Where broker jars and broker state are kept (reused across clones)."""
    base = os.environ.get("RNNREC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rnnrec"
    )
    return Path(base)


def state_root() -> Path:
    """Where broker state (config, data, log) lives: ``RNNREC_KAFKA_STATE_DIR`` or the cache.

    CI points this at a fresh folder so that its broker never replays the logs of
    thousands of earlier test topics (a broker killed uncleanly recovers every
    partition at start, which can take minutes).
    """
    override = os.environ.get("RNNREC_KAFKA_STATE_DIR", "").strip()
    return Path(override) if override else cache_root()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def broker_answers(bootstrap: str, timeout_s: float = 5.0, **client_kwargs: Any) -> bool:
    """True when the broker answers a metadata request (not merely an open port).

    Args:
        bootstrap: bootstrap servers.
        timeout_s: request timeout.
        client_kwargs: extra kafka-python admin options (security, client id).
    """
    from kafka import KafkaAdminClient  # local import: keeps `rnnrec --help` fast
    from kafka.errors import KafkaError

    options: dict[str, Any] = {
        "request_timeout_ms": int(timeout_s * 1000),
        # Else kafka-python waits its default 30 s for an address that never answers.
        "bootstrap_timeout_ms": int(timeout_s * 1000),
        "client_id": "rnnrec-probe",
        **client_kwargs,
    }
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, **options)
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def random_cluster_id() -> str:
    """A KRaft cluster id, as ``StorageTool random-uuid`` makes it (one JVM start saved).

    Kafka prints a random UUID in URL-safe base64 without padding and never hands out
    one that starts with "-" (it would read as a command-line flag).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still "exists"; treat it as dead so status tells the truth.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


@dataclass
class LocalBroker:
    """One local KRaft broker+controller, identified by its listener port."""

    port: int = DEFAULT_PORT
    version: str = KAFKA_VERSION
    heap: str = "768m"

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def libs_dir(self) -> Path:
        return cache_root() / f"kafka-{self.version}" / "libs"

    @property
    def state_dir(self) -> Path:
        return state_root() / f"broker-{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "broker.log"

    # -- jars -----------------------------------------------------------------

    def ensure_jars(self) -> Path:
        """Resolve the pinned broker and its dependencies from Maven Central, once.

        Returns:
            The folder holding the jars (the tarball's ``libs/``).

        Raises:
            LocalBrokerError: Maven is missing or the resolution failed.
        """
        marker = self.libs_dir / ".complete"
        if marker.exists():
            return self.libs_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LocalBrokerError(
                "Maven (mvn) is not installed: it is needed once to fetch the Kafka "
                f"{self.version} jars (apt-get install maven)"
            )
        work = self.libs_dir.parent
        work.mkdir(parents=True, exist_ok=True)
        pom = resources.files("stream_app.kafka").joinpath("pom.xml").read_text()
        (work / "pom.xml").write_text(pom.replace("@KAFKA_VERSION@", self.version))
        tmp_libs = work / "libs.partial"
        shutil.rmtree(tmp_libs, ignore_errors=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(work / "pom.xml"),
            "dependency:copy-dependencies", "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp_libs}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
            raise LocalBrokerError(f"mvn could not fetch Kafka {self.version}: {tail[0]}")
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        tmp_libs.rename(self.libs_dir)
        marker.touch()
        return self.libs_dir

    # -- process --------------------------------------------------------------

    def pid(self) -> int | None:
        """The pid of the broker this folder started, if it still runs.

        The pid file outlives a broker killed with -9 or a reboot, and its number may
        then belong to any other process: only a live ``kafka.Kafka`` started with
        this folder's config counts (`down` would otherwise signal a stranger).
        """
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) and self._runs_our_config(pid) else None

    def _runs_our_config(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:  # no /proc (not Linux), or the process just went: trust the file
            return True
        config = str(self.state_dir / "server.properties").encode()
        return b"kafka.Kafka" in cmdline and config in cmdline

    def status(self) -> dict[str, object]:
        """What is true right now: process alive, and answering metadata requests."""
        pid = self.pid()
        answering = pid is not None and broker_answers(self.bootstrap, timeout_s=3.0)
        return {
            "bootstrap": self.bootstrap,
            "pid": pid,
            "running": pid is not None,
            "ready": answering,
            "version": self.version,
            "log": str(self.log_file),
        }

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise LocalBrokerError(
                "Java is not installed: Kafka 4.x needs Java 17 or newer "
                "(apt-get install openjdk-17-jre-headless)"
            )
        return java

    def _classpath(self) -> str:
        return f"{self.libs_dir}/*"

    def _write_config(self) -> Path:
        template = resources.files("stream_app.kafka").joinpath("server.properties").read_text()
        config = (
            template.replace("@PORT@", str(self.port))
            .replace("@CONTROLLER_PORT@", str(self.controller_port))
            .replace("@DATA_DIR@", str(self.state_dir / "data"))
        )
        path = self.state_dir / "server.properties"
        path.write_text(config)
        log4j = resources.files("stream_app.kafka").joinpath("log4j2.xml").read_text()
        (self.state_dir / "log4j2.xml").write_text(log4j)
        return path

    def _format_storage(self, java: str, config: Path) -> None:
        if (self.state_dir / "data" / "meta.properties").exists():
            return
        base = [java, "-cp", self._classpath(), "kafka.tools.StorageTool"]
        proc = subprocess.run(
            [*base, "format", "-t", random_cluster_id(), "-c", str(config)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise LocalBrokerError(f"formatting KRaft storage failed: {proc.stderr.strip()[:300]}")

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold this port's lock file: two `up` at once (two terminals running
        `make test`) started two JVMs, and the loser's clean-up stopped the winner."""
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir.parent / f"{self.state_dir.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield

    def up(self, timeout_s: float = 300.0) -> str:
        """Start the broker unless it already runs; wait until it answers (one at a time)."""
        with self._exclusive():
            return self._up(timeout_s)

    def _up(self, timeout_s: float) -> str:
        """Start the broker unless it already runs; wait until it answers metadata.

        Returns:
            The bootstrap address.

        The wait is long because a broker stopped uncleanly recovers each partition's
        log before it answers; a JVM that exits fails at once.

        Raises:
            LocalBrokerError: Java or Maven missing, port taken, or no answer in time.
        """
        if self.pid() is not None:
            if self._wait_ready(timeout_s):
                return self.bootstrap
            raise LocalBrokerError(
                f"a broker process runs (pid {self.pid()}) but does not answer on "
                f"{self.bootstrap}; see {self.log_file}"
            )
        java = self._java()
        for port in (self.port, self.controller_port):
            if not port_is_free(port):
                raise LocalBrokerError(
                    f"port {port} on 127.0.0.1 is taken by another process; "
                    "choose another with --port or RNNREC_KAFKA_PORT"
                )
        self.ensure_jars()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self._format_storage(java, config)
        env = dict(os.environ)
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        cmd = [
            java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
            "-XX:ActiveProcessorCount=2", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.xml'}",
            "-cp", self._classpath(), "kafka.Kafka", str(config),
        ]  # fmt: skip
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI that started it
                env=env,
            )
        self.pid_file.write_text(str(proc.pid))
        if not self._wait_ready(timeout_s, proc=proc):
            self.down()
            raise LocalBrokerError(
                f"Kafka did not answer on {self.bootstrap} within {timeout_s:.0f}s; "
                f"see {self.log_file}"
            )
        return self.bootstrap

    def _wait_ready(self, timeout_s: float, proc: subprocess.Popen | None = None) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                return False
            if broker_answers(self.bootstrap, timeout_s=2.0):
                return True
            time.sleep(0.5)
        return False

    def down(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout_s``).

        Returns:
            True if a running broker was stopped, False if none was running.
        """
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _pid_alive(pid):
            _reap(pid)
            time.sleep(0.2)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _pid_alive(pid):
                _reap(pid)
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def reset(self) -> None:
        """Stop the broker and delete its data (topics, offsets)."""
        with self._exclusive():
            self.down()
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def logs(self, lines: int = 50) -> str:
        """The last ``lines`` lines of the broker log."""
        if not self.log_file.exists():
            return ""
        with open(self.log_file, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _reap(pid: int) -> None:
    # When this process started the broker (tests), collect it so it does not
    # linger as a zombie that still looks alive.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def local_port() -> int:
    """The local broker's port: ``RNNREC_KAFKA_PORT``, else `DEFAULT_PORT`.

    Raises:
        LocalBrokerError: the variable is not a port number.
    """
    text = os.environ.get("RNNREC_KAFKA_PORT", "")
    if not text:
        return DEFAULT_PORT
    if not text.isdigit() or not 1024 <= int(text) <= 65534:
        raise LocalBrokerError(f"RNNREC_KAFKA_PORT: {text!r} is not a port in 1024..65534")
    return int(text)


@contextlib.contextmanager
def demo_bootstrap(keep_broker: bool = False, echo: Callable[[str], None] = print) -> Iterator[str]:
    """The external cluster if one is configured, else the local broker, for a block.

    A local broker started here is stopped on exit unless ``keep_broker``; one that
    was already running (someone else's) is always left running.

    Yields:
        The bootstrap address.
    """
    external = external_bootstrap()
    if external is not None:
        echo(f"Kafka at {external}")
        yield external
        return
    broker = LocalBroker(port=local_port())
    started_here = broker.pid() is None
    if started_here:
        echo("starting the local Kafka broker ...")
    try:
        # Inside the try: the JVM runs in its own session, so a Ctrl-C during the
        # wait would otherwise leave it running, and later demos would take it for
        # someone else's and never stop it.
        bootstrap = broker.up()
        echo(f"Kafka at {bootstrap}")
        yield bootstrap
    finally:
        if started_here and not keep_broker and broker.down():
            echo("local broker stopped")
