"""Daemon configuration: flags, then `BLACKBOARD_*` environment variables, then `blackboard.toml`.

One pydantic-settings model holds every knob, so `blackboard run --help`, the environment and
the config file all describe the same fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from blackboard.keys import check_board_name
from blackboard.llm.limiter import ModelLimit

CONFIG_FILE = "blackboard.toml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BLACKBOARD_", toml_file=CONFIG_FILE, extra="forbid", validate_default=True
    )

    url: str = Field("memory://", description="Board URL: memory://, redis://host:6379, redis+cluster://...")
    board: str = Field("default", description="Board name (a namespace in Redis).")
    shards: int = Field(
        1,
        ge=1,
        le=256,
        description="Shards of the board: its goals spread over this many hash tags (Redis Cluster "
        "slots). Fixed when the board is first used; a daemon with another count refuses to start.",
    )
    agents: list[Path] = Field(default_factory=lambda: [Path("agents")], description="Agent plugin folders.")
    entry_points: bool = Field(
        True, description="Also load agents from the 'blackboard.agents' entry points."
    )
    reload: bool = Field(True, description="Watch agent folders and hot-reload changed plugins.")
    grace: float = Field(30.0, ge=0, description="Seconds in-flight handlers get to finish on shutdown.")
    host: str = Field(
        "127.0.0.1", description="HTTP bind address; any other than loopback needs an API token."
    )
    port: int = Field(8420, ge=0, le=65535, description="HTTP port (0 picks a free one).")
    http: bool = Field(True, description="Serve the HTTP API, /metrics and health checks.")
    api_token: SecretStr | None = Field(None, description="Bearer token for the HTTP API.")
    api_principals: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="More HTTP API tokens, each acting as its own principal under the policy, as JSON "
        '{"principal": "token"} (the api_token acts as http).',
    )
    reap_interval: float = Field(5.0, gt=0, description="Seconds between reaper sweeps.")
    sweep: float = Field(5.0, gt=0, description="Longest an idle agent blocks before looking again.")
    presence_interval: float = Field(2.0, gt=0, description="Seconds between daemon heartbeats in Redis.")
    strict: bool = Field(False, description="Reject kinds with no registered schema.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console on a TTY, else JSON."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    model: str | None = Field(
        None, description="Model (a litellm model string) for every LLM agent, over what their files say."
    )
    models: dict[str, str] = Field(
        default_factory=dict, description="Model per LLM agent name (JSON), over `model` and the files."
    )
    llm_limits: dict[str, ModelLimit] = Field(
        default_factory=dict,
        description="Requests/tokens per minute per model or glob, shared by all daemons, as JSON: "
        '{"openai/*": {"rpm": 500, "tpm": 200000}}.',
    )
    policies: list[Path] = Field(
        default_factory=lambda: [Path("policies")],
        description="Policy folders (YAML files); none there: the board runs open, or by the policy it has.",
    )
    audit_dir: Path | None = Field(
        None,
        description="Export the board's audit log into JSONL files in this folder (one daemon at a "
        "time exports; records leave Redis only once on disk).",
    )
    audit_interval: float = Field(5.0, gt=0, description="Seconds between audit exports.")
    retention: float | None = Field(
        None,
        gt=0,
        description="Seconds after a goal's whole tree finished before the daemon deletes it from the "
        "board (none: kept until `blackboard purge`).",
    )
    audit_key: SecretStr | None = Field(
        None, description="HMAC key of the exported audit files' SHA-256 chain (verify needs the same key)."
    )
    otel_endpoint: str | None = Field(
        None,
        description="Export traces (OpenTelemetry, OTLP/HTTP) to this collector URL, e.g. "
        "http://localhost:4318; the standard OTEL_* variables work too. Needs blackboard[otel].",
    )

    @field_validator("board")
    @classmethod
    def _board(cls, v: str) -> str:
        return check_board_name(v)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (passed as init kwargs) win over the environment, which wins over the file.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config: Path | None = None, **flags: Any) -> Settings:
    """Settings from flags (None = not given), the environment, and `config` (default
    ./blackboard.toml when it exists)."""
    cls: type[Settings] = Settings
    if config is not None:
        cls = type("Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": config}})
    return cls(**{k: v for k, v in flags.items() if v is not None})
