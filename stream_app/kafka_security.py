"""How every rnnrec Kafka client authenticates and encrypts: one definition, two mappings.

`KafkaSecuritySettings` holds the ``RNNREC_KAFKA_*`` security fields; `WorkerSettings`
and the topic tool's settings inherit them, so there is one definition. Every place
that builds a Kafka client calls `client_security` and gets both shapes from it:

* Faust's ``broker_credentials`` (aiokafka underneath): `faust.SSLCredentials` or
  `faust.SASLCredentials`, each carrying an `ssl.SSLContext` when TLS is on;
* kafka-python keyword arguments (admin, producer, consumer of the tools and tests).

The SASL password may come from ``RNNREC_KAFKA_SASL_PASSWORD`` or, so Kubernetes can
mount a Secret as a file rather than an environment variable, from the file named by
``RNNREC_KAFKA_SASL_PASSWORD_FILE``. It is a `SecretStr` and never appears in a repr,
a log line or an error message.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSecuritySettings(BaseSettings):
    """Kafka client security (environment prefix ``RNNREC_``), shared by every client."""

    model_config = SettingsConfigDict(env_prefix="RNNREC_", extra="ignore", frozen=True)

    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="How clients reach the brokers."
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        "SCRAM-SHA-512", description="SASL mechanism when the protocol is SASL_*."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL principal.")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (prefer RNNREC_KAFKA_SASL_PASSWORD_FILE)."
    )
    kafka_sasl_password_file: Path | None = Field(
        None, description="File holding the SASL password (a mounted Secret); read at start."
    )
    kafka_ssl_cafile: Path | None = Field(
        None, description="PEM CA bundle for the brokers' certificates (system store if unset)."
    )
    kafka_ssl_certfile: Path | None = Field(
        None, description="PEM client certificate for mutual TLS (optional)."
    )
    kafka_ssl_keyfile: Path | None = Field(
        None, description="PEM private key of the client certificate (if not in the certfile)."
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="Verify that the broker certificate names the host connected to."
    )

    @model_validator(mode="after")
    def _consistent_security(self) -> KafkaSecuritySettings:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_"):
            if self.kafka_sasl_password is not None and self.kafka_sasl_password_file:
                raise ValueError(
                    "set RNNREC_KAFKA_SASL_PASSWORD or RNNREC_KAFKA_SASL_PASSWORD_FILE, not both"
                )
            if not self.kafka_sasl_username or not self.sasl_password():
                raise ValueError(
                    "RNNREC_KAFKA_SASL_USERNAME and RNNREC_KAFKA_SASL_PASSWORD (or "
                    "RNNREC_KAFKA_SASL_PASSWORD_FILE) are required with "
                    f"RNNREC_KAFKA_SECURITY_PROTOCOL={protocol}"
                )
        if protocol in ("SSL", "SASL_SSL"):
            files = {
                "RNNREC_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
                "RNNREC_KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
                "RNNREC_KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
            }
            for name, path in files.items():
                if path is not None and not path.is_file():
                    raise ValueError(f"{name}={path} is not a readable file")
            if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
                raise ValueError("RNNREC_KAFKA_SSL_KEYFILE needs RNNREC_KAFKA_SSL_CERTFILE")
        return self

    def sasl_password(self) -> str | None:
        """The SASL password, from the variable or the file (trailing newline dropped).

        Raises:
            ValueError: the password file cannot be read (one line, no content shown).
        """
        if self.kafka_sasl_password is not None:
            return self.kafka_sasl_password.get_secret_value()
        if self.kafka_sasl_password_file is None:
            return None
        try:
            text = self.kafka_sasl_password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"RNNREC_KAFKA_SASL_PASSWORD_FILE={self.kafka_sasl_password_file} cannot be "
                f"read ({type(exc).__name__})"
            ) from None
        # Secrets written with `echo` end in a newline that is not part of the password.
        return text.rstrip("\r\n") or None

    @property
    def uses_tls(self) -> bool:
        """True for SSL and SASL_SSL."""
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")


@dataclass(frozen=True)
class ClientSecurity:
    """The same security settings in the two shapes rnnrec's Kafka clients take."""

    broker_credentials: Any = None
    """For ``faust.App(broker_credentials=...)``; None means PLAINTEXT."""
    kafka_python: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for kafka-python's admin, producer and consumer."""

    def __repr__(self) -> str:  # the kwargs hold the password: never print them
        return f"ClientSecurity(protocol={self.kafka_python.get('security_protocol')!r})"


def ssl_context(settings: KafkaSecuritySettings) -> ssl.SSLContext:
    """A client TLS context: the CA bundle (or the system store), optional client cert.

    Certificates are always verified; only the host name check can be switched off
    (``RNNREC_KAFKA_SSL_CHECK_HOSTNAME=false``, for brokers reached by an address the
    certificate does not name).
    """
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    return context


def client_security(settings: KafkaSecuritySettings) -> ClientSecurity:
    """Map the security settings to Faust credentials and kafka-python keyword arguments.

    Args:
        settings: any settings object with the ``kafka_*`` security fields
            (`WorkerSettings`, the topic tool's settings).

    Returns:
        Both shapes; PLAINTEXT gives no credentials and ``security_protocol`` only.
    """
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(settings) if settings.uses_tls else None
    if context is not None:
        if settings.kafka_ssl_cafile:
            kwargs["ssl_cafile"] = str(settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile:
            kwargs["ssl_certfile"] = str(settings.kafka_ssl_certfile)
        if settings.kafka_ssl_keyfile:
            kwargs["ssl_keyfile"] = str(settings.kafka_ssl_keyfile)
        if not settings.kafka_ssl_check_hostname:
            kwargs["ssl_check_hostname"] = False
    credentials: Any = None
    if protocol.startswith("SASL_"):
        password = settings.sasl_password()
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = password
        from faust.auth import SASLCredentials  # local: PLAINTEXT tools never load Faust

        # SASLCredentials switches itself to SASL_SSL when given a context.
        credentials = SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    elif context is not None:
        from faust.auth import SSLCredentials

        credentials = SSLCredentials(context)
    return ClientSecurity(broker_credentials=credentials, kafka_python=kwargs)


def kafka_python_kwargs(settings: KafkaSecuritySettings | None) -> dict[str, Any]:
    """kafka-python keyword arguments for ``settings`` (PLAINTEXT defaults when None)."""
    if settings is None:
        return {}
    return client_security(settings).kafka_python
