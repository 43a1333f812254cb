"""stream_app.kafka_security: settings -> Faust credentials and kafka-python options."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import faust
import pytest

from stream_app.kafka_security import client_security
from stream_app.settings import SettingsError, load_settings
from tests.tls_broker import make_ca, openssl_available

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RNNREC_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not openssl_available():
        pytest.skip("openssl is not installed (needed to make a throwaway CA)")
    return make_ca(tmp_path_factory.mktemp("pki"), "unit-ca").ca_cert


def test_plaintext_is_the_default_and_needs_no_credentials() -> None:
    security = client_security(load_settings())
    assert security.broker_credentials is None
    assert security.kafka_python == {"security_protocol": "PLAINTEXT"}


def test_ssl_maps_to_a_verifying_context_and_the_ca_file(ca_file: Path) -> None:
    settings = load_settings(kafka_security_protocol="SSL", kafka_ssl_cafile=str(ca_file))
    security = client_security(settings)
    assert isinstance(security.broker_credentials, faust.SSLCredentials)
    context = security.broker_credentials.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert security.kafka_python == {"security_protocol": "SSL", "ssl_cafile": str(ca_file)}


def test_sasl_ssl_with_password_file_maps_to_both_shapes_and_never_shows_it(
    ca_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("s3cret-from-file\n")  # Secrets often end in a newline
    monkeypatch.setenv("RNNREC_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RNNREC_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("RNNREC_KAFKA_SASL_USERNAME", "rnnrec-worker")
    monkeypatch.setenv("RNNREC_KAFKA_SASL_PASSWORD_FILE", str(password_file))
    monkeypatch.setenv("RNNREC_KAFKA_SSL_CAFILE", str(ca_file))
    settings = load_settings()
    security = client_security(settings)
    credentials = security.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert credentials.password == "s3cret-from-file"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert security.kafka_python["sasl_plain_password"] == "s3cret-from-file"
    assert security.kafka_python["sasl_mechanism"] == "SCRAM-SHA-256"
    for text in (repr(settings), str(settings), repr(security), repr(credentials)):
        assert "s3cret" not in text


def test_sasl_plaintext_with_password_variable() -> None:
    settings = load_settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="u",
        kafka_sasl_password="pw",
    )
    security = client_security(settings)
    assert security.broker_credentials.protocol.value == "SASL_PLAINTEXT"
    assert security.broker_credentials.ssl_context is None
    assert "ssl_cafile" not in security.kafka_python
    assert "pw" not in repr(settings)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "RNNREC_KAFKA_SASL_USERNAME and"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"},
            "RNNREC_KAFKA_SASL_PASSWORD",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.crt"},
            "RNNREC_KAFKA_SSL_CAFILE=/nonexistent/ca.crt is not a readable file",
        ),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": "pw",
                "kafka_sasl_password_file": "/nonexistent/pw",
            },
            "not both",
        ),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_username": "u",
                "kafka_sasl_password_file": "/nonexistent/pw",
            },
            "RNNREC_KAFKA_SASL_PASSWORD_FILE=/nonexistent/pw cannot be read",
        ),
        ({"kafka_security_protocol": "TLS"}, "RNNREC_KAFKA_SECURITY_PROTOCOL"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "RNNREC_KAFKA_SASL_MECHANISM"),
    ],
)
def test_inconsistent_security_is_one_line_naming_the_variable(
    fields: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings(**fields)
    assert "\n" not in str(caught.value)


def test_hostname_check_can_be_turned_off_but_not_verification(ca_file: Path) -> None:
    settings = load_settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(ca_file),
        kafka_ssl_check_hostname=False,
    )
    security = client_security(settings)
    assert security.broker_credentials.context.verify_mode == ssl.CERT_REQUIRED
    assert not security.broker_credentials.context.check_hostname
    assert security.kafka_python["ssl_check_hostname"] is False
