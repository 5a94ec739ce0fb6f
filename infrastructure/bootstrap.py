"""The composition root: settings → event store → application, views and projection runners.

Nothing heavy happens at import time; `bootstrap()` does the wiring when called.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from infrastructure.settings import Settings

logger = logging.getLogger(__name__)

VIEWS_NAME = "TaskViews"
TABLES_LOCK_ID = 0x6D65646961  # advisory lock: one process creates tables at a time


@dataclass
class Runtime:
    """Everything a process needs, built once."""

    settings: Settings
    env: dict[str, str]
    app: Any
    views: Any
    blobs: Any
    telemetry: Any = None
    supervisor: Any = None
    _closers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self._closers):
            try:
                close()
            except Exception:  # noqa: BLE001 - closing must go on
                logger.exception("error while closing")
        self._closers.clear()


def resolve_postgres_env(settings: Settings) -> dict[str, str]:
    from infrastructure.embedded_postgres import postgres_env_from_url, start_embedded_postgres

    if settings.database_url is not None:
        return postgres_env_from_url(settings.database_url.get_secret_value())
    return postgres_env_from_url(start_embedded_postgres(settings.data_dir))


def create_tables(env: dict[str, str], views_name: str = VIEWS_NAME) -> None:
    """Create every table once (serialised across processes by an advisory lock)."""
    from eventsourcing.persistence import InfrastructureFactory
    from eventsourcing.postgres import PostgresTrackingRecorder

    from application.mediatasks import MediaTasks
    from infrastructure.api.stream_tokens import create_secret_table
    from infrastructure.audit_seal import PostgresSeal
    from infrastructure.delivery.qstash_outbox import TRACKING_TABLE as PUBLISHER_TRACKING
    from infrastructure.delivery.seen_token_ids import PostgresSeenTokenIds
    from infrastructure.events_topic_index import create_topic_index
    from infrastructure.metadata_cache import PostgresMetadataCache
    from infrastructure.postgres_views import PostgresTaskViews
    from infrastructure.read_model import ensure_pointer

    create_env = {**env, "CREATE_TABLE": "yes"}
    factory = InfrastructureFactory.construct(env=_named_env("MediaTasks", create_env))
    with factory.datastore.get_connection() as conn:  # type: ignore[attr-defined]
        if factory.datastore.schema != "public":  # type: ignore[attr-defined]
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{factory.datastore.schema}"')  # type: ignore[attr-defined]
        conn.execute("SELECT pg_advisory_lock(%s)", (TABLES_LOCK_ID,))
        try:
            app = MediaTasks(env=create_env)
            app.close()
            factory.process_recorder()
            create_topic_index(factory.datastore, app.recorder.events_table_name)  # type: ignore[attr-defined]
            ensure_pointer(factory.datastore)  # type: ignore[attr-defined]
            PostgresMetadataCache(factory.datastore).create_table()  # type: ignore[attr-defined]
            PostgresSeenTokenIds(factory.datastore).create_table()  # type: ignore[attr-defined]
            create_secret_table(factory.datastore)  # type: ignore[attr-defined]
            publisher_tracking = PostgresTrackingRecorder(factory.datastore,  # type: ignore[attr-defined]
                                                          tracking_table_name=PUBLISHER_TRACKING)
            publisher_tracking.create_table()
            PostgresSeal(factory.datastore).create_table()  # type: ignore[attr-defined]
            views = InfrastructureFactory.construct(env=_named_env(views_name, create_env))
            views.tracking_recorder(PostgresTaskViews)
            views.close()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (TABLES_LOCK_ID,))
    factory.close()


def construct_views(env: dict[str, str], views_name: str = VIEWS_NAME) -> Any:
    from eventsourcing.persistence import InfrastructureFactory

    from infrastructure.postgres_views import PostgresTaskViews

    return InfrastructureFactory.construct(env=_named_env(views_name, env)).tracking_recorder(PostgresTaskViews)


def bootstrap(settings: Settings | None = None, *, env_overrides: dict[str, str] | None = None) -> Runtime:
    """Build the application and the read-model reader for this process."""
    from application.mediatasks import MediaTasks
    from infrastructure.blobs import blob_store_from_url
    from infrastructure.telemetry import configure_telemetry

    settings = settings or Settings()
    telemetry = configure_telemetry(settings)  # before any connection: psycopg's are instrumented
    env = settings.event_store_env(resolve_postgres_env(settings))
    env.update(env_overrides or {})
    create_tables(env)
    from infrastructure.read_model import ViewsSwitch

    app = MediaTasks(env=env)
    views = ViewsSwitch(app.recorder.datastore, lambda name: construct_views(env, name))
    blobs = blob_store_from_url(settings.resolved_blob_url(), s3_endpoint_url=settings.s3_endpoint_url,
                                s3_region=settings.s3_region)
    from infrastructure.supervision import Supervisor

    supervisor = Supervisor(backoff_base_seconds=settings.follower_backoff_base_seconds,
                            backoff_cap_seconds=settings.follower_backoff_cap_seconds)
    runtime = Runtime(settings=settings, env=env, app=app, views=views, blobs=blobs, telemetry=telemetry,
                      supervisor=supervisor)
    runtime._closers.extend([telemetry.shutdown, app.close, views.close, supervisor.stop])
    return runtime


def build_pipeline(runtime: Runtime, worker_id: str) -> Any:
    """The worker pipeline wired to the configured provider, fetcher, blob store and cache."""
    from application.pipeline import PipelineLimits, TaskPipeline
    from infrastructure.metadata_cache import PostgresMetadataCache
    from infrastructure.providers import media_provider_from_settings
    from infrastructure.safe_http import SafeFetcher, UrlPolicy
    from infrastructure.subtitles import parse_track

    s = runtime.settings
    provider = media_provider_from_settings(
        s.provider, url=s.provider_url, key=s.provider_key.get_secret_value() if s.provider_key else None,
        host=s.provider_host, timeout=s.provider_timeout, ytdlp_allow_generic=s.ytdlp_allow_generic,
    )
    fetcher = SafeFetcher(UrlPolicy(allow_cidrs=tuple(s.url_allow_cidrs)), connect_timeout=s.download_connect_timeout,
                          read_timeout=s.download_read_timeout, deadline_seconds=s.download_deadline_seconds)
    runtime._closers.append(fetcher.close)
    limits = PipelineLimits(max_video_bytes=s.max_video_bytes, max_subtitle_bytes=s.max_subtitle_bytes,
                            metadata_ttl_seconds=s.metadata_ttl_seconds, heartbeat_seconds=s.lease_seconds / 3)
    return TaskPipeline(runtime.app, provider=provider, fetcher=fetcher, blobs=runtime.blobs,
                        cache=PostgresMetadataCache(runtime.app.recorder.datastore), parse_subtitles=parse_track,
                        limits=limits, worker_id=worker_id)


def start_inline_dispatcher(runtime: Runtime, worker_id: str) -> Any:
    from infrastructure.dispatch import InlineDispatcher

    s = runtime.settings
    dispatcher = InlineDispatcher(runtime.app, runtime.views, build_pipeline(runtime, worker_id), workers=s.workers,
                                  lease_seconds=s.lease_seconds, retry_base_seconds=s.retry_base_seconds)
    dispatcher.start(runtime.supervisor)
    runtime._closers.append(dispatcher.stop)
    return dispatcher


def qstash_delivery_url(settings: Settings) -> str:
    """Where QStash delivers: the configured public URL + the endpoint's path (also the tokens' `sub`)."""
    if not settings.public_url:
        raise ValueError("MEDIATASKS_PUBLIC_URL is required for QStash delivery")
    return settings.public_url.rstrip("/") + "/v1/deliveries/qstash"


def build_qstash_deliveries(runtime: Runtime, worker_id: str) -> Any:
    """The delivery endpoint's handler: signature checks shared through PostgreSQL, then the pipeline."""
    from infrastructure.delivery.qstash_delivery import QStashDeliveryHandler
    from infrastructure.delivery.qstash_signature import QStashSignatureVerifier
    from infrastructure.delivery.seen_token_ids import PostgresSeenTokenIds

    s = runtime.settings
    keys = [k.get_secret_value() if k else "" for k in (s.qstash_current_signing_key, s.qstash_next_signing_key)]
    verifier = QStashSignatureVerifier(*keys, qstash_delivery_url(s), s.qstash_clock_tolerance_seconds,
                                       seen_token_ids=PostgresSeenTokenIds(runtime.app.recorder.datastore))
    return QStashDeliveryHandler(verifier, build_pipeline(runtime, worker_id), retries=s.qstash_retries,
                                 retry_base_seconds=s.retry_base_seconds)


def start_qstash_publisher(runtime: Runtime) -> Any:
    """The outbox publisher and the takeover sweeper, running until the runtime is closed."""
    from eventsourcing.postgres import PostgresTrackingRecorder

    from infrastructure.delivery.qstash_outbox import TRACKING_TABLE, QStashPublisher, TakeoverSweeper
    from infrastructure.delivery.qstash_publisher import QStashPublishClient
    from infrastructure.metadata_cache import PostgresMetadataCache

    s = runtime.settings
    if s.qstash_token is None:
        raise ValueError("MEDIATASKS_QSTASH_TOKEN is required when MEDIATASKS_DISPATCH=qstash")
    client = QStashPublishClient(s.qstash_url, s.qstash_token.get_secret_value(), qstash_delivery_url(s),
                                 s.qstash_retries)
    datastore = runtime.app.recorder.datastore
    tracking = PostgresTrackingRecorder(datastore, tracking_table_name=TRACKING_TABLE)
    publisher = QStashPublisher(runtime.app, tracking, client)
    sweeper = TakeoverSweeper(runtime.app, runtime.views, publisher, PostgresMetadataCache(datastore),
                              lease_seconds=s.lease_seconds)
    publisher.start(runtime.supervisor)
    sweeper.start(runtime.supervisor)
    runtime._closers.extend([client.close, publisher.stop, sweeper.stop])
    return publisher


def start_sealing_follower(runtime: Runtime) -> Any:
    """The sealing follower (docs/audit.md), running until the runtime is closed; None if off or unsigned."""
    from infrastructure.audit_keys import signer_from_settings
    from infrastructure.audit_seal import PostgresSeal, SealingFollower

    s = runtime.settings
    if not s.audit_seal:
        return None
    signer = signer_from_settings(s)
    if signer is None:
        logger.warning("no audit signing key (MEDIATASKS_AUDIT_SIGNING_KEY or _AUDIT_HMAC_KEY): history not sealed")
        return None
    follower = SealingFollower(runtime.app, PostgresSeal(runtime.app.recorder.datastore), signer,
                               checkpoint_events=s.audit_checkpoint_events,
                               checkpoint_seconds=s.audit_checkpoint_seconds, poll_seconds=s.catch_up_seconds)
    follower.start(runtime.supervisor)
    return follower


class ProjectionRunners:
    """Runs the read model and the refund issuer in this process, supervised, until stopped.

    Each is a ProjectionFollower under `supervisor` (else a supervisor of its own): after a database
    error it follows again from its tracking position. With no views name given, the live read
    model's name is read from the pointer table and followed (the `read-model-pointer` follower):
    after `mediatasks audit rebuild` switches it, the read model's follower restarts on the new one.
    """

    def __init__(self, env: dict[str, str], views_name: str | None = None, *, refunds: bool = True,
                 supervisor: Any = None) -> None:
        from eventsourcing.persistence import InfrastructureFactory

        from application.mediatasks import MediaTasks
        from infrastructure.projection_followers import ProjectionFollower
        from infrastructure.read_model import active_views_name
        from infrastructure.supervision import Supervisor
        from projections.refund_issuer import RefundIssuer

        # The followers share one source application with a few pools; projections work one event at a time.
        self.env = env = {**env, "POSTGRES_POOL_SIZE": "2", "POSTGRES_MAX_OVERFLOW": "4"}
        self.supervisor = supervisor or Supervisor()
        self._owns_supervisor = supervisor is None
        self._lock = threading.Lock()
        self._factory = InfrastructureFactory.construct(
            env=_named_env("MediaTasks", {**env, "POSTGRES_POOL_SIZE": "1", "POSTGRES_MAX_OVERFLOW": "1"}))
        self.source = MediaTasks(env=env)
        self.views_name = views_name or active_views_name(self._factory.datastore)  # type: ignore[attr-defined]
        self.views_runner = self._views_follower(self.views_name)
        self.supervisor.add(self.views_runner)
        self.refunds_runner: Any = None
        if refunds:
            def refund_issuer(previous: Any) -> Any:
                if previous is not None:
                    previous.close()
                return RefundIssuer(env=env)

            self.refunds_runner = ProjectionFollower(REFUNDS_FOLLOWER, self.source, refund_issuer)
            self.supervisor.add(self.refunds_runner)
        self._pointer: Any = None
        if views_name is None:
            self._pointer = ReadModelPointerFollower(self)
            self.supervisor.add(self._pointer)
        self._stopped = threading.Event()

    def _views_follower(self, views_name: str) -> Any:
        from infrastructure.projection_followers import ProjectionFollower
        from projections.task_views import TaskViewsProjection

        projection_class = TaskViewsProjection
        if views_name != TaskViewsProjection.name:
            projection_class = type(f"TaskViewsProjection_{views_name}", (TaskViewsProjection,), {"name": views_name})
        view = construct_views(self.env, views_name)
        projection = projection_class(view=view)
        return ProjectionFollower(VIEWS_FOLLOWER, self.source, lambda _: projection)

    def switch_views(self, name: str) -> None:
        """Follow the read model named `name` instead of the current one."""
        logger.info("read model switched", extra={"views": name, "previous": self.views_name})
        with self._lock:
            new = self._views_follower(name)
            self.supervisor.remove(VIEWS_FOLLOWER)
            old, self.views_runner, self.views_name = self.views_runner, new, name
            self.supervisor.add(new)
        old.projection.view.datastore.close()

    @property
    def runners(self) -> list[Any]:
        return [r for r in (self.views_runner, self.refunds_runner) if r is not None]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runners] + ([self._pointer.name] if self._pointer is not None else [])

    @property
    def views(self) -> Any:
        return self.views_runner.projection.view

    def wait_for(self, notification_id: int | None, timeout: float = 5.0) -> None:
        """Block until the read model has processed `notification_id` (TimeoutError after `timeout`)."""
        if notification_id is None:
            return
        self.views.wait(self.source.name, notification_id, timeout=timeout)

    def check(self) -> None:
        """Raise if any of these followers has failed since it started (it is being restarted)."""
        for status in self.supervisor.statuses():
            if status.name in self.names and status.restarts:
                raise RuntimeError(f"{status.name} failed {status.restarts} times: {status.last_error}")

    def run_forever(self) -> None:
        """Block until stop() (the followers run and restart in the supervisor's threads)."""
        self._stopped.wait()

    def stop(self) -> None:
        self._stopped.set()
        if self._owns_supervisor:
            self.supervisor.stop()
        else:
            for name in self.names:
                self.supervisor.remove(name)
        for runner in self.runners:
            runner.close()
        self.views.datastore.close()
        self.source.close()
        self._factory.close()


VIEWS_FOLLOWER = "read-model"
REFUNDS_FOLLOWER = "refund-issuer"


class ReadModelPointerFollower:
    """Checks the read-model pointer every POINTER_CHECK_SECONDS; a switch restarts the read model's follower."""

    name = "read-model-pointer"

    def __init__(self, runners: ProjectionRunners) -> None:
        self.runners = runners

    def run(self, stopping: threading.Event) -> None:
        from infrastructure.read_model import POINTER_CHECK_SECONDS, active_views_name

        while not stopping.wait(POINTER_CHECK_SECONDS):
            name = active_views_name(self.runners._factory.datastore)  # type: ignore[attr-defined]
            if name != self.runners.views_name:
                self.runners.switch_views(name)


def _named_env(name: str, env: dict[str, str]) -> Any:
    from eventsourcing.utils import Environment

    return Environment(name, env)
