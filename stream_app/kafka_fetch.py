"""How long the broker may hold the worker's fetch requests.

faust-streaming creates its aiokafka consumer with ``fetch_max_wait_ms=1500``, fixed.
aiokafka keeps one fetch request in flight per broker and leaves out of it every
partition whose records are still buffered unread. The worker reads two topics,
``clickstream`` and ``clickstream-repartition``, and the second is normally idle. So
once a fetch brings more clickstream records than the worker handles at once, the
next request holds only the idle repartition partitions, and the broker keeps it
waiting the full 1.5 s for data that never comes; the clickstream partitions, read
meanwhile, cannot be fetched again until it returns. The worker then idles for up to
1.5 s per cycle, each cycle's fetch is bigger, and it settles into that pattern: at
2,000 events/s offered (half its drain rate) a 4,000-event backlog never cleared and
latency stayed at 1.1 to 1.7 s for a whole run (`bench/bench_backlog.py`). With the
wait capped, the same backlog cleared within two seconds.

`limit_fetch_wait` gives an app its own cap; Faust offers no setting for it.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

_APP_ATTRIBUTE = "rnnrec_fetch_max_wait_ms"


def limit_fetch_wait(app: Any, max_wait_ms: int) -> None:
    """Have ``app``'s worker consumer ask the broker to answer fetches within ``max_wait_ms``.

    Takes effect when Faust creates the consumer (at the worker's start); other apps
    in the process keep Faust's 1.5 s.
    """
    setattr(app, _APP_ATTRIBUTE, int(max_wait_ms))
    thread_class = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread_class, "_rnnrec_fetch_wait_patched", False):
        return
    create = thread_class._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        wait_ms = getattr(self.app, _APP_ATTRIBUTE, None)
        if wait_ms is not None:
            # `AIOKafkaConsumer.start` hands it to its fetcher (aiokafka 0.14).
            consumer._fetch_max_wait_ms = wait_ms
        return consumer

    thread_class._create_worker_consumer = _create_worker_consumer
    thread_class._rnnrec_fetch_wait_patched = True
