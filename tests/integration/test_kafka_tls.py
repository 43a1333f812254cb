"""The worker and the tools speak TLS to a broker, and refuse one they cannot verify.

A dedicated broker with an SSL client listener and a throwaway CA is started for
this test (the shared broker is PLAINTEXT and is never reconfigured); it is killed
at the end. The worker runs as a real process with ``RNNREC_KAFKA_SECURITY_PROTOCOL=SSL``
and the CA; its scorer is the test double, since this test is about transport.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from stream_app.kafka_io import create_topics, drain, produce
from stream_app.kafka_local import external_bootstrap
from stream_app.kafka_security import ssl_context
from stream_app.settings import load_settings
from tests.processes import tail
from tests.tls_broker import make_ca, openssl_available, ssl_client_kwargs, tls_broker
from tests.worker_harness import WorkerSetup, click, free_port, running_worker

T0 = 1_600_000_000.0

pytestmark = [
    pytest.mark.skipif(
        external_bootstrap() is not None,
        reason="KAFKA_BOOTSTRAP_SERVERS names an external cluster: this test starts its "
        "own TLS broker, which it can only do locally",
    ),
    pytest.mark.skipif(
        not openssl_available() or shutil.which("java") is None,
        reason="needs openssl (throwaway CA) and java (a dedicated broker)",
    ),
]


def test_worker_serves_over_tls_and_a_client_with_the_wrong_ca_is_refused(
    unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    with tls_broker(tmp_path) as broker:
        cafile = broker.ca.ca_cert
        security = ssl_client_kwargs(cafile)
        setup = WorkerSetup(
            bootstrap=broker.bootstrap,
            prefix=unique_name("w"),
            partitions=1,
            data_dir=tmp_path / "faust-data",
            log=tmp_path / "worker.log",
            port=free_port(),
            extra_env={
                "RNNREC_KAFKA_SECURITY_PROTOCOL": "SSL",
                "RNNREC_KAFKA_SSL_CAFILE": str(cafile),
            },
        )
        create_topics(broker.bootstrap, [setup.topic("clickstream")], security=security)
        events = [click(f"u{i % 2}", f"e{i}", str(i), T0 + i) for i in range(6)]

        with running_worker(setup) as proc:
            produce(broker.bootstrap, setup.topic("clickstream"), events, security=security)
            deadline = time.monotonic() + 45
            records: list = []
            while len(records) < len(events) and time.monotonic() < deadline:
                assert proc.poll() is None, tail(setup.log)
                records = drain(
                    broker.bootstrap, setup.topic("recommendations"),
                    expected=len(events), timeout_s=3, security=security,
                )  # fmt: skip
        assert sorted(orjson.loads(r.value)["event_id"] for r in records) == [
            f"e{i}" for i in range(6)
        ], tail(setup.log)

        # The same client settings with another CA: the handshake fails on
        # certificate verification, and a kafka-python client never gets metadata.
        wrong = make_ca(tmp_path / "wrong", "wrong-ca").ca_cert
        wrong_settings = load_settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(wrong))
        host, port = broker.bootstrap.rsplit(":", 1)
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"),
        ):
            ssl_context(wrong_settings).wrap_socket(raw, server_hostname=host)
        with pytest.raises(KafkaError):
            admin = KafkaAdminClient(
                bootstrap_servers=broker.bootstrap,
                client_id="rnnrec-wrong-ca",
                request_timeout_ms=3000,
                bootstrap_timeout_ms=3000,
                **ssl_client_kwargs(wrong),
            )
            try:
                admin.list_topics()
            finally:
                admin.close()

    assert broker.process.poll() is not None, "the TLS broker outlived the test"
