"""All configuration, read from ``VIVID_*`` environment variables (one definition for every part)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MB = 1024 * 1024


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIVID_", extra="ignore")

    # --- where things live -------------------------------------------------------------------
    data_dir: Path = Field(Path(".vividflow"), description="Embedded mode's database, inputs and results.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in the data dir.")
    redis_url: str | None = Field(None, description="Rate-limit storage; unset keeps limits in process.")
    backend: Literal["local", "kubernetes"] = Field("local", description="Where jobs run.")
    migrate_on_start: bool = Field(True, description="Apply database migrations when the server starts.")
    public_url: str = Field("http://127.0.0.1:8000", description="Base of result URLs served by the API.")

    # --- the local executor ------------------------------------------------------------------
    workers: int = Field(1, ge=0, le=64, description="Local executor concurrency; 0 only queues.")
    worker_memory_limit_mb: int | None = Field(None, ge=64, description="Address-space cap of a worker.")
    lease_seconds: float = Field(
        30.0, ge=1, description="A running job's lease: renewed by its executor, recovered once expired."
    )
    job_max_attempts: int = Field(
        3, ge=1, le=10, description="Runs a job gets when its executor dies or stops under it."
    )

    # --- API limits --------------------------------------------------------------------------
    rate_limits: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["500/hour", "2000/day"],
        description="Request limits per user, across all of the user's keys (`limits` notation, comma "
        "separated).",
    )
    key_rate_limits: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Extra, tighter limits per API key (empty: only the user's)."
    )
    auth_failure_limits: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["30/minute", "300/day"],
        description="Failed authentications allowed per client address; beyond them every key is refused.",
    )
    max_keys_per_user: int = Field(20, ge=1, description="Active API keys a user may have at once.")
    db_threads: int = Field(4, ge=1, le=64, description="Threads for the hot paths' database work.")
    io_threads: int = Field(32, ge=1, le=256, description="Threads for slow network I/O (GCS, Kubernetes).")
    auth_cache_seconds: float = Field(10.0, ge=0, description="How long a checked key is trusted.")
    daily_limit: int = Field(500, ge=0, description="Daily credits per user (one accepted job = one).")
    max_upload_bytes: int = Field(20 * MB, ge=1, description="Largest accepted input image.")
    max_body_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request body other than a multipart image upload."
    )
    max_form_field_bytes: int = Field(16 * 1024, ge=1024, description="Largest non-file form field.")
    max_url_fetches_per_user: int = Field(
        4, ge=1, description="Image URLs one user may have downloading at once (per API process)."
    )
    prefer_wait_max_seconds: float = Field(60.0, ge=0, description="Cap of the `Prefer: wait=N` header.")
    job_deadline_seconds: int = Field(3600, ge=1, description="Run-time limit of one job.")

    # --- job events: status streams, webhooks, cancel, retention ------------------------------
    max_streams_per_user: int = Field(
        20, ge=1, description="Status streams (`/status/{id}/events`) one user may hold open per API process."
    )
    stream_heartbeat_seconds: float = Field(15.0, gt=0, description="Comment heartbeat of status streams.")
    event_poll_seconds: float = Field(
        1.0,
        gt=0,
        description="How often streams look for changes made elsewhere when no notification "
        "channel (PostgreSQL LISTEN/NOTIFY, Redis pub/sub) carries them (SQLite).",
    )
    status_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="Longest an API process answers GET /status from memory: answers are dropped as "
        "soon as their job changes (its event hint), so this bounds only a lost hint. Used while a "
        "notification channel (PostgreSQL or Redis) is up; 0 turns the cache off.",
    )
    webhook_timeout_seconds: float = Field(15.0, gt=0, description="Time a webhook receiver has to answer.")
    webhook_retry_seconds: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0],
        description="Delays before each retry of a failed webhook delivery; then it is given up.",
    )
    webhook_secret_overlap_seconds: float = Field(
        24 * 3600.0, ge=0, description="How long the previous webhook secret keeps signing after a rotation."
    )
    cancel_grace_seconds: float = Field(
        10.0, gt=0, description="How long a cancelled running job may take to stop before it is killed."
    )
    result_retention_days: float = Field(
        30, ge=0, description="Inputs and results of jobs older than this are deleted (0: kept forever)."
    )
    retention_interval_seconds: float = Field(
        3600.0, gt=0, description="How often the server deletes expired inputs and results."
    )

    # --- the web app and prompt enhancement ---------------------------------------------------
    web_enabled: bool = Field(True, description="Serve the web app at / (the API stays under /api/v1).")
    session_secret: SecretStr | None = Field(
        None,
        description="Signs web session cookies; the same on every API replica (default: made once and "
        "kept in the database).",
    )
    session_days: float = Field(14.0, gt=0, description="A web session ends this long after login.")
    session_idle_hours: float = Field(72.0, gt=0, description="A web session unused this long ends.")
    web_auth_limits: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["20/minute"],
        description="Log-in and registration attempts per client address and per email.",
    )
    web_generate_limits: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["500/hour"],
        description="Jobs submitted from the web app per user (apart from the API's limits).",
    )
    enhance_limits: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["10/minute"], description="Prompt enhancements per user (web and API)."
    )
    enhance_model: str = Field("gemini-2.5-flash", description="Gemini model that rewrites prompts.")
    enhance_timeout_seconds: float = Field(30.0, gt=0, description="Time Gemini has to suggest a prompt.")

    # --- the client commands (`vividflow generate/status/cancel/history`) ----------------------
    api_url: str = Field("http://127.0.0.1:8000", description="The server the client commands talk to.")
    api_key: SecretStr | None = Field(None, description="The API key of the client commands.")

    # --- connections (`vividflow serve`) -----------------------------------------------------
    max_header_bytes: int = Field(32 * 1024, ge=1024, description="Request line plus headers, in bytes.")
    header_timeout_seconds: float = Field(10.0, gt=0, description="Time to send the request headers.")
    body_idle_timeout_seconds: float = Field(
        15.0, gt=0, description="Longest wait for the next piece of a request body."
    )
    body_timeout_seconds: float = Field(120.0, gt=0, description="Time to send a whole request body.")
    keepalive_timeout_seconds: int = Field(
        5, ge=1, description="Idle time before a kept-alive connection closes."
    )
    max_connections: int = Field(
        1000, ge=1, description="Open connections (and requests) at once; more are answered 503."
    )
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="Proxies trusted for X-Forwarded-For/-Proto (the client address of limits and logs).",
    )

    api_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="uvicorn worker processes of `vividflow serve` (each runs its own executor of "
        "VIVID_WORKERS; metrics are summed across them).",
    )

    # --- observability -----------------------------------------------------------------------
    metrics_enabled: bool = Field(True, description="Serve Prometheus metrics at /metrics (no key).")
    metrics_via_proxy: bool = Field(
        False, description="Also answer /metrics requests that came through a proxy (X-Forwarded-For)."
    )
    log_format: Literal["auto", "text", "json"] = Field(
        "auto", description="Log lines as text or one JSON object each; auto: text on a terminal, else JSON."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Least level logged.")

    # --- fetching user-supplied URLs (image URLs and webhook targets) -------------------------
    fetch_timeout_seconds: float = Field(15.0, gt=0)
    fetch_max_redirects: int = Field(5, ge=0)
    fetch_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts or CIDRs exempt from the private-address guard (tests only).",
    )
    fetch_allow_http: bool = Field(False, description="Allow plain http:// image URLs (tests only).")
    fetch_ca_bundle: Path | None = Field(None, description="Extra CA bundle trusted for https image URLs.")

    # --- Google Cloud Storage ----------------------------------------------------------------
    gcs_bucket: str | None = Field(None, description="Write results (and cluster-mode inputs) here.")
    gcs_prefix: str = Field("videos", description="Object prefix of results in the bucket.")
    gcs_inputs_prefix: str = Field("inputs", description="Object prefix of uploaded inputs in the bucket.")
    gcs_signed_urls: bool = Field(False, description="Answer V4 signed URLs instead of public ones.")
    gcs_signed_url_expiry_seconds: int = Field(24 * 3600, ge=1, le=7 * 24 * 3600)
    gcs_signing_key_file: Path | None = Field(
        None, description="Service-account JSON key that signs result URLs (default: the client's)."
    )

    # --- Wan 2.1 -----------------------------------------------------------------------------
    wan_model: str = Field(
        "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", description="Hugging Face model id or a local directory."
    )
    wan_model_480p: str = Field(
        "", description="Checkpoint for jobs up to 832x480 pixels (id or directory); empty: VIVID_WAN_MODEL."
    )
    wan_model_720p: str = Field(
        "", description="Checkpoint for jobs above 832x480 pixels (id or directory); empty: VIVID_WAN_MODEL."
    )
    wan_device: str | None = Field(None, description="torch device; default cuda if available, else cpu.")
    wan_cpu_offload: bool = Field(
        False, description="Enable model CPU offload (smaller GPUs); the same as VIVID_WAN_OFFLOAD=model."
    )
    wan_offload: Literal["none", "model", "group"] = Field(
        "none",
        description="Memory offload: none, model (diffusers model CPU offload) or group (group offload "
        "with CUDA streams, for 24 GB GPUs); group needs CUDA.",
    )
    wan_vae_tiling: bool = Field(False, description="Enable VAE tiling (smaller GPUs).")
    wan_attention: str = Field(
        "native",
        description="diffusers attention backend (native, flash, flash_hub, sage, ...); checked at load.",
    )
    wan_cache: Literal["none", "first_block", "magcache"] = Field(
        "none",
        description="Step caching of the transformer in standard-preset jobs: none, first_block "
        "(diffusers First Block Cache) or magcache (MagCache, with the published Wan 2.1 I2V ratios).",
    )
    wan_cache_threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Step cache threshold: higher skips more steps (faster, rougher); unset: 0.05 for "
        "first_block, 0.12 for magcache (MagCache's Wan 2.1 setting).",
    )
    wan_magcache_ratios: Annotated[list[float], NoDecode] = Field(
        default_factory=list,
        description="MagCache magnitude ratios of your own checkpoint (comma-separated, one per step of "
        "a calibration run); empty: the published ones of Wan 2.1 I2V 14B 480P or 720P, by job size.",
    )
    wan_compile: bool = Field(
        False, description="torch.compile the repeated transformer blocks (regional compile)."
    )
    wan_compile_backend: str = Field(
        "inductor", description="torch.compile backend of VIVID_WAN_COMPILE (tests use a cheaper one)."
    )
    wan_lora: str = Field(
        "",
        description="LoRA of preset=fast (e.g. LightX2V's step/CFG-distilled Wan 2.1 I2V LoRA): a "
        ".safetensors file, a directory or a Hugging Face id; empty: preset=fast is refused.",
    )
    wan_lora_weight_name: str = Field(
        "", description="The LoRA's file inside VIVID_WAN_LORA's repository or directory, if it has several."
    )
    wan_fast_steps: int = Field(4, ge=1, le=100, description="Steps of preset=fast jobs that give none.")
    wan_fast_cfg: float = Field(
        1.0, ge=1.0, le=20.0, description="cfg of preset=fast jobs that give none (1.0: no CFG pass)."
    )

    @field_validator("wan_magcache_ratios", mode="before")
    @classmethod
    def _wan_ratio_list(cls, value: object) -> object:
        return _split_list(value)

    # --- Veo 3.1 -----------------------------------------------------------------------------
    veo_model: str = Field("veo-3.1-generate-001", description="Vertex AI Veo model id.")
    vertex_project: str | None = None
    vertex_location: str = "us-central1"
    vertex_api_key: SecretStr | None = Field(None, description="Vertex AI express-mode API key.")
    vertex_base_url: str | None = Field(None, description="Override the Vertex AI endpoint (tests).")
    veo_poll_initial_seconds: float = Field(5.0, gt=0)
    veo_poll_max_seconds: float = Field(30.0, gt=0)

    # --- cluster mode (API backend "kubernetes", operator, runner Jobs) -------------------------
    kube_namespace: str = Field("default", description="Namespace of VideoJobs and their Jobs.")
    runner_image: str = Field("vividflow-runner:latest", description="Image of runner Jobs.")
    runner_command: list[str] = Field(
        default_factory=lambda: ["python", "-m", "vividflow.runner"],
        description="Command of the runner container (JSON list); the spec is appended as --spec-json.",
    )
    runner_service_account: str | None = Field(
        "vividflow-runner", description="ServiceAccount of runner Pods (may patch videojobs/status)."
    )
    runner_env: dict[str, str] = Field(default_factory=dict, description="Extra env of runner Pods (JSON).")
    runner_env_secret: str | None = Field(
        None, description="Secret whose keys become runner env (Vertex key, VIVID_* settings)."
    )
    gcs_credentials_secret: str | None = Field(
        None,
        description="Secret with a service-account key.json, mounted for GOOGLE_APPLICATION_CREDENTIALS.",
    )
    runner_resources: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Container resources of runner Pods (JSON: requests/limits); GPUs are added for wan2.1.",
    )
    gpu_resource: str = Field("nvidia.com/gpu", description="Extended resource requested by wan2.1 Jobs.")
    gpu_count: int = Field(1, ge=0)
    gpu_node_selector: dict[str, str] = Field(default_factory=dict, description="nodeSelector of GPU Jobs.")
    gpu_tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Tolerations of GPU Jobs."
    )
    gpu_priority_class: str | None = Field(None, description="priorityClassName of GPU Jobs.")
    model_cache_pvc: str | None = Field(None, description="PVC mounted as the model cache of GPU Jobs.")
    model_cache_path: str = Field("/models", description="Where the model cache is mounted (HF_HOME).")
    job_backoff_limit: int = Field(2, ge=0, description="Retries of a runner Job.")
    job_ttl_seconds: int = Field(3600, ge=0, description="ttlSecondsAfterFinished of runner Jobs.")
    max_running_gpu_jobs: int = Field(0, ge=0, description="GPU Jobs running at once; 0 = no limit.")
    kueue_queue: str | None = Field(None, description="Hand admission to Kueue: this LocalQueue's name.")
    operator_metrics_port: int = Field(
        9090, ge=0, le=65535, description="Port of the operator's Prometheus metrics (0: off)."
    )
    operator_resync_seconds: float = Field(30.0, gt=0, description="Level-based resync of active VideoJobs.")
    image_pull_grace_seconds: float = Field(
        120.0, gt=0, description="How long a runner image may fail to pull before its job fails."
    )

    # --- runner in a container ---------------------------------------------------------------
    videojob_name: str | None = Field(None, description="Set in runner Pods: report progress onto it.")
    videojob_namespace: str | None = Field(None, description="Set in runner Pods with videojob_name.")
    termination_log: Path = Field(
        Path("/dev/termination-log"), description="Where a containerised runner writes its result JSON."
    )

    @field_validator(
        "rate_limits",
        "key_rate_limits",
        "auth_failure_limits",
        "fetch_allow_hosts",
        "forwarded_allow_ips",
        "webhook_retry_seconds",
        "web_auth_limits",
        "web_generate_limits",
        "enhance_limits",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_list(value)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'vividflow.db').resolve()}"

    @property
    def inputs_dir(self) -> Path:
        return self.data_dir / "inputs"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"


@lru_cache
def get_settings() -> Settings:
    return Settings()
