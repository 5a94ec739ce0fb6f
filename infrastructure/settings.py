"""Settings from MEDIATASKS_* environment variables, built once in the composition root."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from application.mediatasks import DEFAULT_LEASE_SECONDS, DEFAULT_MAX_ATTEMPTS, DEFAULT_PRICES


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDIATASKS_", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None, description="postgresql://user:pass@host:port/db; unset starts an embedded server"
    )
    data_dir: Path = Field(default=Path("data"), description="embedded PostgreSQL and blobs live here")
    postgres_schema: str = Field(default="", description="schema of every table (one shard per schema)")
    postgres_pool_size: int = Field(default=4, ge=1, description="connections each pool keeps open")
    postgres_max_overflow: int = Field(default=16, ge=0, description="extra connections a pool may open under load")
    group_commit: Literal["on", "off"] = Field(
        default="on", description="concurrent event-store inserts of a process share one transaction and commit"
    )
    group_commit_max_events: int = Field(default=500, ge=1, description="most events one shared transaction holds")
    admin_token: SecretStr | None = Field(default=None, description="bearer token for /v1/admin/*")
    lease_seconds: float = Field(default=DEFAULT_LEASE_SECONDS, gt=0)
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=20)
    price_subtitles: int = Field(default=DEFAULT_PRICES["subtitles"], ge=1)
    price_video: int = Field(default=DEFAULT_PRICES["video"], ge=1)
    price_video_and_subtitles: int = Field(default=DEFAULT_PRICES["video_and_subtitles"], ge=1)
    aggregate_cache_size: int = Field(
        default=10_000, ge=0, description="aggregates kept in memory (fast-forwarded on read)"
    )
    catch_up_seconds: float = Field(
        default=1.0, gt=0, description="projections poll this often in case a NOTIFY is lost"
    )
    sse_ping_seconds: float = Field(default=15, gt=0, description="keep-alive comment interval of live streams")
    max_body_bytes: int = Field(default=16 * 1024, gt=0, description="larger request bodies get 413")
    dispatch: Literal["inline", "none", "qstash"] = Field(
        default="inline", description="inline: this process runs attempts; qstash: QStash delivers them to workers"
    )
    workers: int = Field(default=4, ge=1, le=64, description="attempts run at once by the inline dispatcher")
    retry_base_seconds: float = Field(default=2.0, ge=0, description="first backoff after a transient failure")
    provider: Literal["http", "ytdlp"] = "ytdlp"
    provider_url: str | None = None
    provider_key: SecretStr | None = None
    provider_host: str | None = None
    provider_timeout: float = Field(default=15, gt=0)
    ytdlp_allow_generic: bool = Field(default=False, description="let yt-dlp read any HTML5 page (tests only)")
    blob_url: str | None = Field(default=None, description="file://DIR or s3://BUCKET/PREFIX; default DATA_DIR/blobs")
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    max_video_bytes: int = Field(default=2 * 1024**3, gt=0)
    max_subtitle_bytes: int = Field(
        default=4 * 1024**2, gt=0, description="largest subtitle file read (real tracks: under 1 MiB; docs/security.md)"
    )
    metadata_ttl_seconds: float = Field(default=900, ge=0)
    url_allow_cidrs: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated ranges the SSRF guard lets through (tests)"
    )
    download_connect_timeout: float = Field(default=10, gt=0)
    download_read_timeout: float = Field(default=30, gt=0)
    download_deadline_seconds: float = Field(default=3600, gt=0)
    telemetry: bool = Field(default=True, description="traces, metrics and instrumentation; false turns all off")
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        default="none", description="where spans (and pushed metrics) go; otlp uses OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    otel_trace_ratio: float = Field(default=1.0, ge=0, le=1, description="share of new traces kept (head sampling)")
    public_url: str | None = Field(
        default=None, description="the service's public base URL; QStash delivers to it + /v1/deliveries/qstash"
    )
    qstash_url: str = Field(default="https://qstash.upstash.io", description="base URL of QStash's publish API")
    qstash_token: SecretStr | None = Field(default=None, description="bearer token for QStash's publish API")
    qstash_current_signing_key: SecretStr | None = Field(default=None, description="verifies Upstash-Signature")
    qstash_next_signing_key: SecretStr | None = Field(default=None, description="tried after the current key")
    qstash_retries: int = Field(
        default=3, ge=0, le=20, description="Upstash-Retries of each message (at most the QStash plan's ceiling)"
    )
    qstash_clock_tolerance_seconds: float = Field(default=5, ge=0, description="leeway for a token's exp/nbf/iat")
    host: str = "127.0.0.1"
    port: int = 8000
    follower_backoff_base_seconds: float = Field(
        default=0.5, gt=0, description="first wait before a failed follower (projection, dispatcher, ...) runs again"
    )
    follower_backoff_cap_seconds: float = Field(
        default=5, gt=0, description="longest wait between restarts of a failing follower (jittered)"
    )
    ready_timeout_seconds: float = Field(
        default=1.0, gt=0, le=10, description="/readyz answers 503 if the event store does not answer within this"
    )
    ready_lag_seconds: float = Field(
        default=30, gt=0, description="/readyz answers 503 when the read model is this many seconds behind the log"
    )
    store_retry_after_seconds: int = Field(
        default=2, ge=1, description="Retry-After of a 503 store_unavailable (the database did not answer)"
    )
    projections_port: int | None = Field(
        default=None, description="`mediatasks projections` serves /healthz and /readyz on this port (unset: none)"
    )
    projections_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="`mediatasks projections` lowers its CPU priority by this much (os.nice): the request path wins the cores",
    )
    postgres_wait_seconds: int = Field(
        default=5, ge=1, description="longest wait for a pooled connection before the request answers 503"
    )
    stream_token_secret: SecretStr | None = Field(
        default=None, description="signs stream tokens; unset: generated once (data dir or database) and reused"
    )
    stream_token_previous_secrets: SecretStr | None = Field(
        default=None, description="comma-separated secrets whose tokens still verify during a rotation"
    )
    max_streams_per_user: int = Field(default=20, ge=1, description="live streams one user may hold open per process")
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, description="larger request line + headers get 431")
    max_headers: int = Field(default=100, ge=10, description="more request header fields get 431")
    header_timeout_seconds: float = Field(default=10, gt=0, description="request headers must arrive within this")
    body_timeout_seconds: float = Field(default=30, gt=0, description="a request body must arrive within this")
    auth_failures_per_minute: int = Field(
        default=30, ge=1, description="failed authentications per client address per minute, then 429"
    )
    auth_failure_delay_seconds: float = Field(default=0.2, ge=0, description="each failed authentication waits this")
    metrics_auth: Literal["admin", "none"] = Field(
        default="admin", description="admin: GET /metrics needs the admin token; none: open (bind it privately)"
    )
    audit_signing_key: SecretStr | None = Field(
        default=None, description="Ed25519 private key (PEM text or a PEM file's path) signing audit checkpoints"
    )
    audit_hmac_key: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 secret signing audit checkpoints when no Ed25519 key is set"
    )
    audit_checkpoint_events: int = Field(default=10_000, ge=1, description="a signed checkpoint at least this often")
    audit_checkpoint_seconds: float = Field(default=60, gt=0, description="... or after this long with new events")
    audit_seal: bool = Field(default=True, description="run the sealing follower beside the projections")
    webhook_retry_schedule: str = Field(
        default="0,5,300,1800,7200,18000,36000,36000",
        description="seconds before each webhook attempt (comma separated, ±20 % jitter); compress it for tests",
    )
    webhook_timeout_seconds: float = Field(default=15, gt=0, description="a webhook attempt's total deadline")
    webhook_concurrency: int = Field(default=8, ge=1, le=256, description="endpoints delivered to at once per process")
    webhook_disable_after_seconds: float = Field(
        default=5 * 86400, gt=0, description="an endpoint whose deliveries all fail for this long is disabled"
    )
    rate_limit_storage: str = Field(
        default="memory://", description="the `limits` storage: memory:// (one process) or redis://host:port"
    )
    rate_limit_submissions: str = Field(
        default="60/minute", description="submissions (POST /v1/tasks, retries) per API key, e.g. 10/second"
    )
    rate_limit_reads: str = Field(default="1200/minute", description="other authenticated requests per API key")
    max_active_tasks: int = Field(default=20, ge=1, description="a user's tasks queued or running at once")
    price_audio: int = Field(default=DEFAULT_PRICES["audio"], ge=1, description="credits for an `audio` task")
    max_post_items: int = Field(default=20, ge=1, le=100, description="media stored of a post with several")
    max_duration_seconds: float = Field(default=4 * 3600, gt=0, description="longer videos fail `too_long`")
    max_manifest_bytes: int = Field(
        default=4 * 1024**2, gt=0, description="larger HLS playlists or DASH manifests fail `manifest_too_large`"
    )
    segment_retries: int = Field(default=3, ge=0, le=10, description="retries of a failed HLS/DASH segment")

    @field_validator("url_allow_cidrs", mode="before")
    @classmethod
    def _split_cidrs(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def resolved_blob_url(self) -> str:
        return self.blob_url or (self.data_dir / "blobs").resolve().as_uri()

    def event_store_env(self, postgres: dict[str, str]) -> dict[str, str]:
        """The environment eventsourcing's applications and projections are built from."""
        env = {
            "PERSISTENCE_MODULE": "infrastructure.postgres.event_store:MediaTasksPostgresFactory",
            "POSTGRES_POOL_SIZE": str(self.postgres_pool_size),
            "POSTGRES_MAX_OVERFLOW": str(self.postgres_max_overflow),
            "POSTGRES_SCHEMA": self.postgres_schema,
            "POSTGRES_LOCK_TIMEOUT": "10",
            "POSTGRES_CONNECT_TIMEOUT": str(self.postgres_wait_seconds),
            "GROUP_COMMIT": self.group_commit,
            "GROUP_COMMIT_MAX_EVENTS": str(self.group_commit_max_events),
            "CREATE_TABLE": "no",
            "CATCH_UP_SECONDS": str(self.catch_up_seconds),
            "AGGREGATE_CACHE_MAXSIZE": str(self.aggregate_cache_size),
            "LEASE_SECONDS": str(self.lease_seconds),
            "MAX_ATTEMPTS": str(self.max_attempts),
            "PRICE_SUBTITLES": str(self.price_subtitles),
            "PRICE_VIDEO": str(self.price_video),
            "PRICE_VIDEO_AND_SUBTITLES": str(self.price_video_and_subtitles),
            "PRICE_AUDIO": str(self.price_audio),
        }
        env.update(postgres)
        return env
