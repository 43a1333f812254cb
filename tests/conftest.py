"""Shared fixtures: one real Kafka broker per test session, unique names per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from stream_app.kafka_io import create_topics
from stream_app.kafka_local import LocalBroker, broker_answers, external_bootstrap

TEST_PORT = int(os.environ.get("RNNREC_KAFKA_PORT", "19092"))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real broker: external, already running, or started here."""
    external = external_bootstrap()
    if external:
        if not broker_answers(external, timeout_s=10):
            pytest.fail(f"KAFKA_BOOTSTRAP_SERVERS={external} does not answer")
        yield external
        return
    broker = LocalBroker(port=TEST_PORT)
    started_here = broker.pid() is None
    bootstrap = broker.up()
    yield bootstrap
    if started_here:
        broker.down()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names unique to this test (topics, groups, app ids): ``unique_name("in")``."""
    token = uuid.uuid4().hex[:8]
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")

    def make(role: str) -> str:
        return f"t-{test}-{role}-{token}"

    return make


@pytest.fixture
def topic_factory(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> Callable[..., str]:
    """Create a topic unique to this test and return its name."""

    def make(
        role: str = "topic", partitions: int = 1, configs: dict[str, str] | None = None
    ) -> str:
        name = unique_name(role)
        create_topics(kafka_bootstrap, [name], partitions=partitions, configs=configs)
        return name

    return make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests under tests/integration talk to a broker; everything else is a unit test
    # unless marked otherwise, so `-m unit` never needs Kafka.
    for item in items:
        path = str(item.fspath)
        explicit_unit = any(m.name == "unit" for m in item.iter_markers())
        if explicit_unit:
            continue
        if f"{os.sep}integration{os.sep}" in path or f"{os.sep}chaos{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        elif not any(m.name in ("integration", "slow") for m in item.iter_markers()):
            item.add_marker(pytest.mark.unit)
