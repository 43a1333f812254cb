"""Read-only web views of the worker: health, readiness, metrics, a user's latest top-K.

``/ready`` means "this worker can serve": partitions assigned, table recovery from
the changelog complete and no rebalance in progress, the model loaded, and the
item-updates history read (the first batch waits for it); a Kubernetes readiness
probe should use it. ``/health`` only says the process answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import faust
from faust.exceptions import SameNode
from faust.web import Request, Response, View

from stream_app.metrics import CONTENT_TYPE_LATEST
from stream_app.state import StateFormatError, decode_state

if TYPE_CHECKING:
    from stream_app.worker import WorkerRuntime


def readiness(app: faust.App, model_loaded: bool, catalogue_read: bool = True) -> dict[str, bool]:
    """The readiness checks of a worker, each by name, and their conjunction.

    Args:
        app: the running Faust app.
        model_loaded: whether a scorer is loaded.
        catalogue_read: whether item-updates was read up to where it ended at start,
            or the first batch would no longer wait for it (True when not followed).

    Returns:
        ``{"partitions_assigned", "recovery_complete", "model_loaded",
        "catalogue_read", "not_stopping", "ready"}``.
    """
    try:
        assigned = bool(app.consumer.assignment())
    except Exception:  # the consumer does not exist before the worker starts
        assigned = False
    recovery = app.tables.recovery
    recovered = (
        recovery.completed.is_set()
        and not app.rebalancing
        and not getattr(app, "in_recovery", False)
    )
    checks = {
        "partitions_assigned": assigned,
        "recovery_complete": bool(recovered),
        "model_loaded": model_loaded,
        "catalogue_read": catalogue_read,
        # False while a SIGTERM drain finishes the events in hand: take no new traffic.
        "not_stopping": not getattr(getattr(app, "server", None), "draining", False),
    }
    checks["ready"] = all(checks.values())
    return checks


def register_views(runtime: WorkerRuntime) -> None:
    """Add the worker's views to ``runtime.app``."""
    app, table, metrics = runtime.app, runtime.table, runtime.metrics

    @app.page("/health")
    async def health(view: View, request: Request) -> Response:
        return view.json({"status": "ok"})

    @app.page("/ready")
    async def ready(view: View, request: Request) -> Response:
        server = runtime.server
        checks = readiness(
            app,
            model_loaded=server.scorer is not None,
            catalogue_read=server.items is None or server.items.settled,
        )
        checks["model_version"] = server.scorer.version  # type: ignore[assignment]
        return view.json(checks, status=200 if checks["ready"] else 503)

    @app.page("/metrics")
    async def prometheus(view: View, request: Request) -> Response:
        # aiohttp wants the charset apart from the content type.
        content_type = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"
        return view.bytes(metrics.exposition(), content_type=content_type)

    @app.page("/users/{user_id}/recommendations")
    class UserRecommendations(View):
        """The latest recommendations of one user, from the worker owning its partition."""

        async def get(self, request: Request, user_id: str) -> Response:
            try:
                # Answered by the worker that owns the user's partition (like
                # @app.table_route, which fails while the producer has no metadata
                # for the changelog topic yet: then this worker answers).
                return await app.router.route_req(table.name, user_id, self.web, request)
            except SameNode:
                pass
            except (TypeError, KeyError):
                pass
            except (aiohttp.ClientError, TimeoutError) as exc:
                # The owner is gone (it keeps its partitions until the group notices).
                return self.json(
                    {"user_id": user_id, "error": f"the owning worker did not answer: {exc!r}"},
                    status=503,
                )
            if not readiness(app, model_loaded=True)["recovery_complete"]:
                # A user not recovered yet is not a user who does not exist.
                return self.json(
                    {"user_id": user_id, "error": "the state is being recovered; retry"},
                    status=503,
                )
            data = table.get(user_id)
            if data is None:
                return self.json({"user_id": user_id, "found": False}, status=404)
            try:
                state = decode_state(data)
            except StateFormatError:
                return self.json({"user_id": user_id, "found": False}, status=404)
            last = state.last_result
            body: dict[str, Any] = {"user_id": user_id, "found": last is not None}
            if last is not None:
                body.update(
                    event_id=last.event_id,
                    session_id=last.session_id,
                    items=last.items,
                    scores=last.scores,
                    p_purchase=last.p_purchase,
                    model_version=last.model_version,
                    event_ts=last.event_ts,
                    produced_ts=last.produced_ts,
                )
            return self.json(body, status=200 if last is not None else 404)
