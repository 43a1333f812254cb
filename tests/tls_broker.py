"""A dedicated Kafka broker with a TLS client listener, and throwaway CAs, for tests.

The shared test broker is PLAINTEXT and never restarted (DESIGN.md, Testing against
a broker), so the TLS test starts its own: same jars as `LocalBroker`, its own
``server.properties``, data and log in the test's tmp folder, free ports. The
certificates are made at test time with ``openssl`` and live only in tmp_path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_app.kafka_local import LocalBroker, broker_answers, random_cluster_id
from tests.worker_harness import free_port

KEYSTORE_PASSWORD = "test-only-keystore"  # a throwaway keystore in tmp_path


@dataclass(frozen=True)
class Pki:
    """PEM certificate and key of a throwaway CA."""

    ca_cert: Path
    ca_key: Path


def _openssl(*args: str | Path) -> None:
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()[-300:]}")


def openssl_available() -> bool:
    """True when the ``openssl`` command exists (the certificates are made with it)."""
    return shutil.which("openssl") is not None


def make_ca(directory: Path, name: str) -> Pki:
    """A self-signed CA (EC P-256, valid one day) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "1", "-subj", f"/CN={name}", "-keyout", key, "-out", cert,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return Pki(cert, key)


def make_server_keystore(directory: Path, ca: Pki) -> Path:
    """A PKCS12 keystore: key and certificate for 127.0.0.1/localhost signed by ``ca``."""
    key, csr, cert = directory / "broker.key", directory / "broker.csr", directory / "broker.crt"
    ext = directory / "broker.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=CA:FALSE\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", "/CN=localhost", "-keyout", key, "-out", csr,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca.ca_cert, "-CAkey", ca.ca_key,
        "-CAcreateserial", "-days", "1", "-extfile", ext, "-out", cert,
    )  # fmt: skip
    keystore = directory / "broker.p12"
    _openssl(
        "pkcs12", "-export", "-in", cert, "-inkey", key, "-certfile", ca.ca_cert,
        "-name", "broker", "-out", keystore, "-passout", f"pass:{KEYSTORE_PASSWORD}",
    )  # fmt: skip
    return keystore


def _config(port: int, internal_port: int, controller_port: int, data: Path, keystore: Path) -> str:
    # The client listener is SSL; replication and the controller stay PLAINTEXT on
    # loopback (one node: nothing else connects to them).
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=SSL://127.0.0.1:{port},INTERNAL://127.0.0.1:{internal_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SSL:SSL
ssl.keystore.type=PKCS12
ssl.keystore.location={keystore}
ssl.keystore.password={KEYSTORE_PASSWORD}
ssl.key.password={KEYSTORE_PASSWORD}
ssl.client.auth=none
log.dirs={data}
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=1
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.enable=false
auto.create.topics.enable=false
"""


def ssl_client_kwargs(cafile: Path) -> dict[str, Any]:
    """kafka-python options for a client that trusts ``cafile``."""
    return {"security_protocol": "SSL", "ssl_cafile": str(cafile)}


def ssl_answers(bootstrap: str, cafile: Path, timeout_s: float = 5.0) -> bool:
    """True when the broker answers a metadata request over TLS verified with ``cafile``."""
    return broker_answers(
        bootstrap,
        timeout_s,
        client_id="rnnrec-tls-probe",
        bootstrap_timeout_ms=int(timeout_s * 1000),
        **ssl_client_kwargs(cafile),
    )


@dataclass
class TlsBroker:
    """A running single-node broker whose client listener is TLS."""

    bootstrap: str
    ca: Pki
    process: subprocess.Popen
    log: Path


def _stop(proc: subprocess.Popen) -> None:
    # The broker runs in its own process group: kill the group so no JVM is left.
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@contextlib.contextmanager
def tls_broker(tmp_path: Path, timeout_s: float = 60.0) -> Iterator[TlsBroker]:
    """Start a dedicated TLS broker on free ports; kill it (and wait) on exit.

    Raises:
        RuntimeError: it did not answer over TLS within ``timeout_s`` (log tail included).
    """
    jars = LocalBroker().ensure_jars()
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java is not installed")
    root = tmp_path / "tls-broker"
    root.mkdir(parents=True, exist_ok=True)
    ca = make_ca(root / "pki", "test-ca")
    keystore = make_server_keystore(root / "pki", ca)
    port, internal, controller = free_port(), free_port(), free_port()
    config = root / "server.properties"
    config.write_text(_config(port, internal, controller, root / "data", keystore))
    classpath = f"{jars}/*"
    fmt = subprocess.run(
        [java, "-Xshare:auto", "-cp", classpath, "kafka.tools.StorageTool", "format",
         "-t", random_cluster_id(), "-c", str(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if fmt.returncode != 0:
        raise RuntimeError(f"formatting the TLS broker failed: {fmt.stderr.strip()[-300:]}")
    log = root / "broker.log"
    log4j = root / "log4j2.xml"
    from importlib import resources

    log4j.write_text(resources.files("stream_app.kafka").joinpath("log4j2.xml").read_text())
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [java, "-Xmx384m", "-Xms384m", "-XX:+UseSerialGC", "-XX:ActiveProcessorCount=1",
             "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
             f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath, "kafka.Kafka", str(config)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )  # fmt: skip
    broker = TlsBroker(f"127.0.0.1:{port}", ca, proc, log)
    try:
        deadline = time.monotonic() + timeout_s
        while not ssl_answers(broker.bootstrap, ca.ca_cert, timeout_s=3.0):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"TLS broker did not answer on {broker.bootstrap}:\n{tail}")
            time.sleep(0.5)
        yield broker
    finally:
        _stop(proc)
