"""Settings of the hub: one frozen object, read from ``HUB_*`` environment variables.

A ``.env`` file in the working directory is read too. Values are validated
once at start; an inconsistent combination (e.g. SASL without a password) is
a :class:`~hub.errors.ConfigurationError` before anything connects.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hub.errors import ConfigurationError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class Settings(BaseSettings):
    """Everything the hub needs to know about its environment."""

    model_config = SettingsConfigDict(
        env_prefix="HUB_", env_file=".env", frozen=True, extra="ignore"
    )

    bootstrap_servers: str | None = Field(
        default=None,
        description="Kafka bootstrap servers, comma-separated. Unset: start the embedded broker.",
    )
    broker_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the embedded broker; unset = a free one."
    )
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_cafile: Path | None = Field(default=None, description="CA bundle to verify the brokers.")
    ssl_certfile: Path | None = Field(default=None, description="Client certificate (mutual TLS).")
    ssl_keyfile: Path | None = Field(default=None, description="Client private key (mutual TLS).")
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    replication_factor: int = Field(
        default=1, ge=1, le=7, description="Replication factor of topics the hub creates."
    )
    data_dir: Path = Field(
        default=Path(".hub-data"), description="Where SQLite state and the broker log are kept."
    )
    municipality: str = Field(
        default="riga", pattern=r"^[a-z][a-z0-9-]{1,31}$", description="Municipality served."
    )
    log_level: LogLevel = "INFO"
    rules: str | None = Field(
        default=None,
        description="Admission rules: a shipped municipality or a TOML path; unset: municipality.",
    )
    allocation_api: str = Field(
        default="127.0.0.1:8710", description="host:port of the allocation service's HTTP API."
    )
    expiry_interval: float = Field(
        default=60.0, gt=0, description="Seconds between checks for offers past their deadline."
    )
    recheck_wait: float = Field(
        default=600.0,
        gt=0,
        description=(
            "Seconds a round waits for VIIS and the population register to verify the facts"
            " again before its list is built; a child whose register has not answered by then"
            " is left out of that list as not verified."
        ),
    )
    simulation: bool = Field(
        default=False,
        description=(
            "This deployment is a simulation: synthetic data and simulators; allows the"
            " simulated clock (HUB_CLOCK=simulated) and `hub clock`."
        ),
    )
    clock: Literal["system", "simulated"] = Field(
        default="system",
        description=(
            "The services' clock: the system clock, or (in a simulation only) the system clock"
            " plus the offset operators publish on hub.clock.v1 with `hub clock advance|set`."
        ),
    )

    # Reliability: batches, retries, parking, shutdown, metrics.
    batch_size: int = Field(default=500, ge=1, le=10_000, description="Records per batch.")
    fetch_concurrency: int = Field(
        default=16, ge=1, le=1000, description="Calls to external systems in flight per service."
    )
    max_attempts: int = Field(
        default=5, ge=1, le=50, description="Handling attempts before a message is dead-lettered."
    )
    retry_first_delay: float = Field(
        default=1.0, gt=0, description="Seconds a message stays parked after its first failure."
    )
    retry_max_delay: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="Longest delay before a parked message is tried again (delays double, ±20%).",
    )
    fetch_max_wait: float = Field(
        default=0.05,
        gt=0,
        le=10,
        description=(
            "Longest a service's fetch waits at the broker for new records. Apache Kafka"
            " answers as soon as records arrive, so this only sets how often an idle consumer"
            " asks; the embedded broker answers at the end of the wait, so it bounds latency."
        ),
    )
    session_timeout: float = Field(
        default=10.0,
        ge=1,
        le=300,
        description="Seconds without heartbeats before Kafka gives a consumer's partitions away.",
    )
    heartbeat_interval: float = Field(
        default=3.0, gt=0, le=100, description="Seconds between consumer heartbeats."
    )
    shutdown_timeout: float = Field(
        default=20.0, gt=0, description="Seconds a service has to stop cleanly on SIGTERM."
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of /metrics on 127.0.0.1; unset: none."
    )
    ops_port: int = Field(
        default=8700,
        ge=1,
        le=65535,
        description="Port of the operations view (`hub ops`, `hub run all`) on 127.0.0.1.",
    )
    health_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "Port of a service's /health and /metrics on 127.0.0.1; unset: the service's own"
            " default (8720 allocation and `hub run all`, 8721–8726 the adapters); 0: none."
        ),
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="NORMAL survives any crash of the process; FULL also a power cut.",
    )
    http_timeout: float = Field(default=10.0, gt=0, description="Seconds per HTTP request.")
    http_attempts: int = Field(
        default=4, ge=1, le=20, description="Tries of one call to an external system."
    )
    http_max_seconds: float = Field(
        default=30.0, gt=0, description="Longest time spent retrying one call."
    )

    # External systems: where the adapters find them (the simulators listen there too).
    vps_url: str = Field(default="http://127.0.0.1:8101", description="VPS base URL.")
    viis_url: str = Field(default="http://127.0.0.1:8102", description="VIIS base URL.")
    gis_url: str = Field(default="http://127.0.0.1:8103", description="GIS / address register URL.")
    dvs_url: str = Field(default="http://127.0.0.1:8104", description="DVS base URL.")
    authorisations_url: str = Field(
        default="http://127.0.0.1:8108", description="Register of authorisations base URL."
    )
    vps_poll_interval: float = Field(
        default=1.0, gt=0, le=3600, description="Seconds between polls of an idle VPS feed."
    )
    # Notifications: where the channels are, how fast they may be used, when to escalate.
    eadrese_url: str = Field(default="http://127.0.0.1:8105", description="e-adrese base URL.")
    sms_url: str = Field(default="http://127.0.0.1:8106", description="SMS gateway base URL.")
    letter_url: str = Field(default="http://127.0.0.1:8107", description="Print-and-post URL.")
    smtp_host: str = Field(default="127.0.0.1", description="SMTP server for e-mail.")
    smtp_port: int = Field(default=8025, ge=1, le=65535, description="SMTP port.")
    smtp_sender: str = Field(
        default="pii@pasvaldiba.example.lv", description="From address of notification e-mail."
    )
    notify_callback: str = Field(
        default="127.0.0.1:8711",
        description="host:port where the notification service takes SMS delivery reports.",
    )
    notify_portal_url: str = Field(
        default="https://e-pakalpojumi.example.lv/pii",
        description="Parents' e-service, linked from offers (to accept or decline).",
    )
    notify_escalate_after: float = Field(
        default=172_800.0,
        gt=0,
        description="Seconds without an electronic confirmation before a registered letter.",
    )
    notify_rate_eadrese: int = Field(default=600, ge=1, description="e-adrese messages a minute.")
    notify_rate_email: int = Field(default=600, ge=1, description="E-mails a minute.")
    notify_rate_sms: int = Field(default=300, ge=1, description="SMS a minute.")
    notify_rate_letter: int = Field(default=120, ge=1, description="Letters a minute.")
    seal_key: Path | None = Field(
        default=None, description="PEM private key of the municipality's e-seal (documents)."
    )
    seal_certificate: Path | None = Field(
        default=None, description="PEM certificate of the e-seal, the seal's signer."
    )
    seal_password: SecretStr | None = Field(
        default=None, description="Password of the e-seal's key, if it is encrypted."
    )

    # Simulators (hub simulate): the synthetic municipality and the injected faults.
    sim_seed: int = Field(default=1, description="Seed of the synthetic municipality.")
    sim_children: int = Field(
        default=300, ge=50, le=30_000, description="Children of the synthetic municipality."
    )
    sim_institutions: int = Field(default=10, ge=1, le=400, description="Its institutions.")
    sim_fault_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of requests answered with a fault."
    )
    sim_latency: float = Field(default=0.0, ge=0, le=60, description="Seconds added per answer.")
    dvs_number_prefix: str = Field(
        default="PII",
        pattern=r"^[A-Z0-9-]{1,12}$",
        description="Prefix of DVS registration numbers (PREFIX/YEAR/SEQUENCE).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        uses_sasl = self.security_protocol.startswith("SASL")
        if uses_sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism,"
                " sasl_username and sasl_password"
            )
        if not uses_sasl and self.sasl_mechanism:
            raise ValueError("sasl_mechanism is set but security_protocol does not use SASL")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile must be given together")
        if self.bootstrap_servers is None and self.security_protocol != "PLAINTEXT":
            raise ValueError("the embedded broker speaks PLAINTEXT only; set bootstrap_servers")
        if self.heartbeat_interval >= self.session_timeout:
            raise ValueError("heartbeat_interval must be shorter than session_timeout")
        if self.retry_first_delay > self.retry_max_delay:
            raise ValueError("retry_first_delay must not exceed retry_max_delay")
        if self.clock == "simulated" and not self.simulation:
            # A clock anyone can move would let offers expire early in production.
            raise ValueError(
                "HUB_CLOCK=simulated needs HUB_SIMULATION=true: only a simulation (synthetic"
                " data and simulators) may run on a simulated clock"
            )
        return self

    def derive(self, **overrides: object) -> Settings:
        """These settings with ``overrides`` (by field name), validated as a whole again.

        The one way to change settings after they are read: a value out of range, an
        unknown name or a combination the rules refuse is a :class:`ConfigurationError`
        naming the setting, never a quietly inconsistent copy.
        """
        unknown = sorted(set(overrides) - set(type(self).model_fields))
        if unknown:
            raise ConfigurationError(f"no such setting: {', '.join(unknown)}")
        try:
            return type(self).model_validate(self.model_dump() | overrides)
        except ValidationError as exc:
            raise ConfigurationError(f"invalid settings ({_problems(exc)})") from None

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS context for the Kafka connection, or None for plaintext."""
        if not self.uses_tls:
            return None
        try:
            context = ssl.create_default_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None
            )
            if self.ssl_certfile and self.ssl_keyfile:
                context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load TLS files: {exc}") from exc
        return context


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides taking precedence."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(f"invalid settings ({_problems(exc)})") from None


def _problems(error: ValidationError) -> str:
    """What is wrong, by ``HUB_*`` variable; never the value given (it may be a secret)."""
    return "; ".join(
        (f"HUB_{'_'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "") + e["msg"]
        for e in error.errors()
    )
