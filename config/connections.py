"""Connections and logging every program shares: Kafka, Oracle, log level and format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from config.base import EnrichSettings


class LoggingSettings(EnrichSettings):
    """How a program of the product logs and how often it reports progress."""

    progress_seconds: float = Field(2.0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"


class KafkaConnection(EnrichSettings):
    """How to reach Kafka; shared by the dataflow and the reference publisher."""

    kafka_brokers: Annotated[list[str], NoDecode] = []
    kafka_config: dict[str, SecretStr] = {}
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None

    @field_validator("kafka_brokers", mode="before")
    @classmethod
    def _split_brokers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [broker.strip() for broker in value.split(",") if broker.strip()]
        return value

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka properties for every client; holds secrets, so never log it."""
        config = {name: value.get_secret_value() for name, value in self.kafka_config.items()}
        if self.kafka_sasl_username is not None:
            config["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password is not None:
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        return config


class OracleConnection(EnrichSettings):
    """How to reach Oracle; shared by the sink and the reference publisher.

    Thin mode needs no Oracle client; thick mode loads Oracle Instant Client
    (from `oracle_client_lib_dir`, or the system library path).
    """

    oracle_user: str | None = None
    oracle_password: SecretStr | None = None
    oracle_dsn: str | None = None
    oracle_thick_mode: bool = False
    oracle_client_lib_dir: Path | None = None

    def require_oracle(self, because: str) -> None:
        """Refuse start-up, naming every missing setting, when Oracle is used."""
        missing = [
            name
            for name in ("oracle_user", "oracle_password", "oracle_dsn")
            if getattr(self, name) is None
        ]
        if missing:
            raise ValueError(f"{missing[0]}: {because}, so {', '.join(missing)} must be set")
