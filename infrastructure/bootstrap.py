"""The composition root: settings → event store → application, views, pipeline and followers.

It only wires: tables are created by their adapters (infrastructure/postgres/tables.py), the
projection runners live in infrastructure/projection_runners.py. Nothing heavy happens at import
time; `bootstrap()` does the wiring when called.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from infrastructure.runtime import Runtime
from infrastructure.settings import Settings

if TYPE_CHECKING:
    from application.pipeline import TaskPipeline
    from infrastructure.delivery.inline_dispatcher import InlineDispatcher
    from infrastructure.delivery.qstash_delivery import QStashDeliveryHandler
    from infrastructure.delivery.qstash_outbox_publisher import QStashPublisher
    from infrastructure.media_formats.assembler import StreamingMediaAssembler
    from infrastructure.postgres.audit_seal import SealingFollower
    from infrastructure.safe_http import SafeFetcher

logger = logging.getLogger(__name__)


def bootstrap(settings: Settings | None = None, *, env_overrides: dict[str, str] | None = None) -> Runtime:
    """Build the application and the read-model reader for this process."""
    from application.mediatasks import MediaTasks
    from infrastructure.blobs import blob_store_from_url
    from infrastructure.observability.telemetry import configure_telemetry
    from infrastructure.postgres.tables import construct_views, create_tables, resolve_postgres_env
    from infrastructure.postgres.views_pointer import ViewsSwitch
    from infrastructure.supervision import Supervisor

    settings = settings or Settings()
    telemetry = configure_telemetry(settings)  # before any connection: psycopg's are instrumented
    database_url = settings.database_url.get_secret_value() if settings.database_url is not None else None
    env = settings.event_store_env(resolve_postgres_env(database_url, settings.data_dir))
    env.update(env_overrides or {})
    create_tables(env)
    app = MediaTasks(env=env)
    views = ViewsSwitch(app.recorder.datastore, lambda name: construct_views(env, name))
    blobs = blob_store_from_url(
        settings.resolved_blob_url(), s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
    )
    supervisor = Supervisor(
        backoff_base_seconds=settings.follower_backoff_base_seconds,
        backoff_cap_seconds=settings.follower_backoff_cap_seconds,
    )
    runtime = Runtime(
        settings=settings, env=env, app=app, views=views, blobs=blobs, telemetry=telemetry, supervisor=supervisor
    )
    runtime._closers.extend([telemetry.shutdown, app.close, views.close, supervisor.stop])
    return runtime


def build_pipeline(runtime: Runtime, worker_id: str) -> TaskPipeline:
    """The worker pipeline wired to the configured provider, fetcher, blob store and cache."""
    from application.pipeline import PipelineLimits, TaskPipeline
    from infrastructure.allocator import fix_mmap_threshold
    from infrastructure.postgres.metadata_cache import PostgresMetadataCache
    from infrastructure.providers import media_provider_from_settings
    from infrastructure.safe_http import SafeFetcher, UrlPolicy
    from infrastructure.subtitles import parse_track

    s = runtime.settings
    fix_mmap_threshold()  # segments' memory goes back to the system: RSS flat over long streams
    provider = media_provider_from_settings(
        s.provider,
        url=s.provider_url,
        key=s.provider_key.get_secret_value() if s.provider_key else None,
        host=s.provider_host,
        timeout=s.provider_timeout,
        ytdlp_allow_generic=s.ytdlp_allow_generic,
    )
    fetcher = SafeFetcher(
        UrlPolicy(allow_cidrs=tuple(s.url_allow_cidrs)),
        connect_timeout=s.download_connect_timeout,
        read_timeout=s.download_read_timeout,
        deadline_seconds=s.download_deadline_seconds,
    )
    runtime._closers.append(fetcher.close)
    limits = PipelineLimits(
        max_video_bytes=s.max_video_bytes,
        max_subtitle_bytes=s.max_subtitle_bytes,
        metadata_ttl_seconds=s.metadata_ttl_seconds,
        heartbeat_seconds=s.lease_seconds / 3,
        max_post_items=s.max_post_items,
        max_duration_seconds=s.max_duration_seconds,
    )
    return TaskPipeline(
        runtime.app,
        provider=provider,
        fetcher=fetcher,
        blobs=runtime.blobs,
        cache=PostgresMetadataCache(runtime.app.recorder.datastore),
        parse_subtitles=parse_track,
        limits=limits,
        worker_id=worker_id,
        assembler=build_media_assembler(s, fetcher),
    )


def build_media_assembler(settings: Settings, fetcher: SafeFetcher) -> StreamingMediaAssembler:
    """The HLS/DASH/split-file assembler over the pipeline's SSRF-guarded fetcher."""
    from infrastructure.media_formats.assembler import AssemblyLimits, StreamingMediaAssembler

    return StreamingMediaAssembler(
        fetcher,
        AssemblyLimits(
            max_manifest_bytes=settings.max_manifest_bytes,
            segment_retries=settings.segment_retries,
            max_duration_seconds=settings.max_duration_seconds,
        ),
    )


def start_inline_dispatcher(runtime: Runtime, worker_id: str) -> InlineDispatcher:
    from infrastructure.delivery.inline_dispatcher import InlineDispatcher

    s = runtime.settings
    dispatcher = InlineDispatcher(
        runtime.app,
        runtime.views,
        build_pipeline(runtime, worker_id),
        workers=s.workers,
        lease_seconds=s.lease_seconds,
        retry_base_seconds=s.retry_base_seconds,
    )
    dispatcher.start(runtime.supervisor)
    runtime._closers.append(dispatcher.stop)
    return dispatcher


def qstash_delivery_url(settings: Settings) -> str:
    """Where QStash delivers: the configured public URL + the endpoint's path (also the tokens' `sub`)."""
    if not settings.public_url:
        raise ValueError("MEDIATASKS_PUBLIC_URL is required for QStash delivery")
    return settings.public_url.rstrip("/") + "/v1/deliveries/qstash"


def build_qstash_deliveries(runtime: Runtime, worker_id: str) -> QStashDeliveryHandler:
    """The delivery endpoint's handler: signature checks shared through PostgreSQL, then the pipeline."""
    from infrastructure.delivery.qstash_delivery import QStashDeliveryHandler
    from infrastructure.delivery.qstash_signature import QStashSignatureVerifier
    from infrastructure.postgres.seen_token_ids import PostgresSeenTokenIds

    s = runtime.settings
    keys = [k.get_secret_value() if k else "" for k in (s.qstash_current_signing_key, s.qstash_next_signing_key)]
    verifier = QStashSignatureVerifier(
        *keys,
        qstash_delivery_url(s),
        s.qstash_clock_tolerance_seconds,
        seen_token_ids=PostgresSeenTokenIds(runtime.app.recorder.datastore),
    )
    return QStashDeliveryHandler(
        verifier, build_pipeline(runtime, worker_id), retries=s.qstash_retries, retry_base_seconds=s.retry_base_seconds
    )


def start_qstash_publisher(runtime: Runtime) -> QStashPublisher:
    """The outbox publisher and the takeover sweeper, running until the runtime is closed."""
    from infrastructure.delivery.qstash_client import QStashPublishClient
    from infrastructure.delivery.qstash_outbox_publisher import QStashPublisher, TakeoverSweeper
    from infrastructure.postgres.metadata_cache import PostgresMetadataCache
    from infrastructure.postgres.tables import publisher_tracking

    s = runtime.settings
    if s.qstash_token is None:
        raise ValueError("MEDIATASKS_QSTASH_TOKEN is required when MEDIATASKS_DISPATCH=qstash")
    client = QStashPublishClient(
        s.qstash_url, s.qstash_token.get_secret_value(), qstash_delivery_url(s), s.qstash_retries
    )
    datastore = runtime.app.recorder.datastore
    tracking = publisher_tracking(datastore)
    publisher = QStashPublisher(runtime.app, tracking, client)
    sweeper = TakeoverSweeper(
        runtime.app, runtime.views, publisher, PostgresMetadataCache(datastore), lease_seconds=s.lease_seconds
    )
    publisher.start(runtime.supervisor)
    sweeper.start(runtime.supervisor)
    runtime._closers.extend([client.close, publisher.stop, sweeper.stop])
    return publisher


def start_sealing_follower(runtime: Runtime) -> SealingFollower | None:
    """The sealing follower (docs/audit.md), running until the runtime is closed; None if off or unsigned."""
    follower = sealing_follower(runtime)
    if follower is None:
        return None
    follower.start(runtime.supervisor)
    return follower


def sealing_follower(runtime: Runtime) -> SealingFollower | None:
    """The sealing follower with the settings' key (not started); None if sealing is off or there is no key."""
    from infrastructure.audit.keys import signer_from_settings
    from infrastructure.postgres.audit_seal import PostgresSeal, SealingFollower

    s = runtime.settings
    if not s.audit_seal:
        return None
    signer = signer_from_settings(s)
    if signer is None:
        logger.warning("no audit signing key (MEDIATASKS_AUDIT_SIGNING_KEY or _AUDIT_HMAC_KEY): history not sealed")
        return None
    return SealingFollower(
        runtime.app,
        PostgresSeal(runtime.app.recorder.datastore),
        signer,
        checkpoint_events=s.audit_checkpoint_events,
        checkpoint_seconds=s.audit_checkpoint_seconds,
        poll_seconds=s.catch_up_seconds,
    )
