"""The one Settings object: every knob of the API and the worker, read from the environment.

Variables carry the prefix ``GATEWAY_`` and may also come from a ``.env`` file. The names and
documented names and defaults are part of the gateway's interface: docs/API.md lists every
one ("Settings"), and tests/test_docs.py checks that none is missing there.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_UPSTREAM = "https://api.pactsafe.com/v1.1"
MIN_API_KEY_LENGTH = 16


def _split(value: object) -> object:
    """Comma-separated text to a list of trimmed, non-empty items (lists pass through)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_file=".env", extra="ignore", frozen=True
    )

    redis_url: str = "redis://localhost:6379/0"
    upstream_base_url: str = DEFAULT_UPSTREAM
    upstream_token: SecretStr | None = None
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_secret: SecretStr | None = None
    webhook_secrets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_allowed_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    poll_initial_seconds: float = Field(2.0, gt=0)
    poll_multiplier: float = Field(1.5, ge=1)
    poll_max_seconds: float = Field(60.0, gt=0)
    link_retention_seconds: float = Field(2_592_000, gt=0)
    expiry_warning_seconds: float = Field(259_200, ge=0)
    upstream_max_active_tasks: int = Field(4, ge=1)
    upstream_max_rps: float = Field(5, gt=0)
    ready_worker_seconds: float = Field(30, gt=0)
    # Limits that protect every client (README, "Security and limits").
    file_allowed_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    download_deadline_seconds: float = Field(600, gt=0)
    client_max_downloads: int = Field(4, ge=1)
    client_max_deliveries: int = Field(10, ge=1)

    # Tuning and operations.
    upstream_timeout_seconds: float = Field(30.0, gt=0)
    upstream_max_retries: int = Field(8, ge=0)
    upstream_retry_max_seconds: float = Field(900.0, gt=0)
    upstream_task_max_age_seconds: float = Field(6 * 3600, gt=0)
    record_retention_seconds: float = Field(90 * 86400, gt=0)
    fields_cache_seconds: float = Field(3600, gt=0)
    fields_stale_seconds: float = Field(86400, ge=0)
    worker_max_jobs: int = Field(50, ge=1)
    # Slots of the delivery lane (worker/lane.py), besides GATEWAY_WORKER_MAX_JOBS.
    worker_delivery_jobs: int = Field(20, ge=1)
    worker_job_timeout_seconds: float = Field(120, gt=0)
    queue_poll_seconds: float = Field(0.1, gt=0)
    sweep_grace_seconds: float = Field(60, gt=0)
    worker_redis_retry_seconds: float = Field(30, ge=0)
    log_level: str = "INFO"
    client_rate_limit_per_minute: int = Field(0, ge=0)
    sweep_interval_seconds: float = Field(60, gt=0)
    heartbeat_seconds: float = Field(5, gt=0)
    worker_metrics_port: int = Field(0, ge=0, le=65535)
    worker_shutdown_seconds: int = Field(25, ge=1)
    # The archive: the gateway's own copy of each completed export's CSV (README, "Archive").
    archive_url: str | None = None
    archive_retention_seconds: float = Field(31_536_000, ge=0)  # 0: kept for ever
    archive_retry_seconds: float = Field(5, gt=0)  # first wait after a failed copy, doubling
    archive_retry_max_seconds: float = Field(600, gt=0)
    archive_max_attempts: int = Field(12, ge=1)
    archive_verify_sample: int = Field(1, ge=0)  # archived copies re-read per sweep
    archive_ready_cache_seconds: float = Field(10, ge=0)  # /readyz probes the store this often

    @field_validator("archive_url", mode="before")
    @classmethod
    def _blank_archive_is_off(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    # Operator console.
    admin_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    console_session_seconds: float = Field(28_800, gt=0)
    console_signin_per_minute: int = Field(10, ge=0)

    # Set by ``export-gateway run`` only: allows the short keys of a laptop.
    dev_runner: bool = False

    # Redis in production: Sentinel, TLS, and a killed worker's jobs handed back.
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_sentinel_master: str = "mymaster"
    redis_tls_ca_file: str | None = None
    worker_recovery_seconds: float = Field(15, gt=0)

    # Feeds: incremental sync on a schedule.
    feed_settle_seconds: float = Field(300, ge=0)
    client_max_feeds: int = Field(100, ge=0)
    # Extensions: how often each worker looks for due feeds; attempts per window and the wait
    # before the first retry (doubling after each); where runs' windowed CSVs are kept
    # (file:///path or s3://bucket/prefix; default: the archive's, else .gateway/feeds).
    feed_scheduler_seconds: float = Field(10, gt=0)
    feed_run_attempts: int = Field(3, ge=1)
    feed_retry_seconds: float = Field(60, ge=0)
    feed_storage_url: str | None = None

    _split_lists = field_validator(
        "api_keys",
        "admin_keys",
        "webhook_secrets",
        "webhook_allowed_networks",
        "file_allowed_networks",
        "webhook_retry_schedule",
        "redis_sentinels",
        mode="before",
    )(_split)

    @property
    def uses_sandbox_token(self) -> bool:
        return self.upstream_token is None

    def api_key_digests(self) -> dict[str, str]:
        """Map of sha256 hex digest of each API key -> client id.

        Refuses (``ValueError`` naming the setting and the client ids, never a key) settings
        that would let one client act as another: a key given to two clients (they would
        silently become one), and a plain key shorter than ``MIN_API_KEY_LENGTH`` characters
        outside the dev runner (short enough to guess)."""
        return _key_digests(self.api_keys, "GATEWAY_API_KEYS", "client_id:key", self.dev_runner)

    def admin_key_digests(self) -> dict[str, str]:
        """Map of sha256 hex digest of each operator console admin key -> the admin's name
        (the same rules as ``api_key_digests``)."""
        return _key_digests(self.admin_keys, "GATEWAY_ADMIN_KEYS", "name:key", self.dev_runner)


def _key_digests(pairs: list[str], setting: str, shape: str, dev_runner: bool) -> dict[str, str]:
    """``owner:key`` or ``owner:sha256:<hex>`` pairs -> {sha256 hex digest: owner}."""
    digests: dict[str, str] = {}
    for pair in pairs:
        owner, sep, key = pair.partition(":")
        if not sep or not owner or not key:
            raise ValueError(f"{setting} entries must look like {shape}")
        if key.startswith("sha256:"):
            digest = key.removeprefix("sha256:").lower()
        else:
            if len(key) < MIN_API_KEY_LENGTH and not dev_runner:
                raise ValueError(
                    f"{setting}: the key of {owner!r} is shorter than "
                    f"{MIN_API_KEY_LENGTH} characters; give it a longer random key"
                )
            digest = hashlib.sha256(key.encode()).hexdigest()
        other = digests.get(digest)
        if other is not None and other != owner:
            raise ValueError(
                f"{setting}: {other!r} and {owner!r} have the same key; each needs a key of its own"
            )
        digests[digest] = owner
    return digests


@lru_cache
def get_settings() -> Settings:
    return Settings()
