"""Settings from MEDIATASKS_* environment variables, built once in the composition root."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDIATASKS_", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None, description="postgresql://user:pass@host:port/db; unset starts an embedded server"
    )
    data_dir: Path = Field(default=Path("data"), description="embedded PostgreSQL and blobs live here")
    postgres_schema: str = Field(default="", description="schema of every table (one shard per schema)")
    postgres_pool_size: int = 10
    postgres_max_overflow: int = 10
    admin_token: SecretStr | None = Field(default=None, description="bearer token for /v1/admin/*")
    lease_seconds: float = Field(default=600, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=20)
    price_subtitles: int = Field(default=1, ge=1)
    price_video: int = Field(default=2, ge=1)
    price_video_and_subtitles: int = Field(default=3, ge=1)
    aggregate_cache_size: int = Field(default=10_000, ge=0, description="aggregates kept in memory (fast-forwarded on read)")
    catch_up_seconds: float = Field(default=1.0, gt=0, description="projections poll this often in case a NOTIFY is lost")
    sse_ping_seconds: float = Field(default=15, gt=0, description="keep-alive comment interval of live streams")
    max_body_bytes: int = Field(default=16 * 1024, gt=0, description="larger request bodies get 413")
    host: str = "127.0.0.1"
    port: int = 8000

    def event_store_env(self, postgres: dict[str, str]) -> dict[str, str]:
        """The environment eventsourcing's applications and projections are built from."""
        env = {
            "PERSISTENCE_MODULE": "infrastructure.eventstore:MediaTasksPostgresFactory",
            "POSTGRES_POOL_SIZE": str(self.postgres_pool_size),
            "POSTGRES_MAX_OVERFLOW": str(self.postgres_max_overflow),
            "POSTGRES_SCHEMA": self.postgres_schema,
            "POSTGRES_LOCK_TIMEOUT": "10",
            "CREATE_TABLE": "no",
            "CATCH_UP_SECONDS": str(self.catch_up_seconds),
            "AGGREGATE_CACHE_MAXSIZE": str(self.aggregate_cache_size),
            "LEASE_SECONDS": str(self.lease_seconds),
            "MAX_ATTEMPTS": str(self.max_attempts),
            "PRICE_SUBTITLES": str(self.price_subtitles),
            "PRICE_VIDEO": str(self.price_video),
            "PRICE_VIDEO_AND_SUBTITLES": str(self.price_video_and_subtitles),
        }
        env.update(postgres)
        return env
