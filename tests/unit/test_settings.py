"""Settings: HUB_ environment variables, validation, frozen, TLS/SASL wiring."""

from pathlib import Path

import pytest

from hub.errors import ConfigurationError
from hub.kafka import client_options, kafka_security
from hub.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env file
    for name in list(__import__("os").environ):
        if name.startswith("HUB_"):
            monkeypatch.delenv(name)


def test_defaults_use_the_embedded_broker() -> None:
    settings = load_settings()
    assert settings.bootstrap_servers is None
    assert settings.security_protocol == "PLAINTEXT"
    assert settings.municipality == "riga"
    assert kafka_security(settings) is None
    assert client_options(settings) == {}


def test_environment_variables_with_the_hub_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_BOOTSTRAP_SERVERS", "kafka-1:9093,kafka-2:9093")
    monkeypatch.setenv("HUB_MUNICIPALITY", "liepaja")
    monkeypatch.setenv("HUB_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("HUB_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("HUB_SASL_USERNAME", "hub")
    monkeypatch.setenv("HUB_SASL_PASSWORD", "s3cret")
    settings = load_settings()
    assert settings.bootstrap_servers == "kafka-1:9093,kafka-2:9093"
    assert settings.municipality == "liepaja"
    assert "s3cret" not in repr(settings)
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_password"] == "s3cret"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("HUB_LOG_LEVEL=DEBUG\nHUB_DATA_DIR=/var/lib/hub\n")
    settings = load_settings()
    assert settings.log_level == "DEBUG"
    assert settings.data_dir == Path("/var/lib/hub")


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError):
        settings.municipality = "jelgava"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"bootstrap_servers": "k:9092", "security_protocol": "SASL_SSL"}, "needs sasl_mechanism"),
        ({"bootstrap_servers": "k:9092", "sasl_mechanism": "PLAIN"}, "does not use SASL"),
        ({"bootstrap_servers": "k:9092", "ssl_certfile": "c.pem"}, "together"),
        ({"security_protocol": "SSL"}, "embedded broker speaks PLAINTEXT"),
        ({"municipality": "Rīga"}, "HUB_MUNICIPALITY"),
        ({"broker_port": 70000}, "HUB_BROKER_PORT"),
    ],
)
def test_inconsistent_settings_are_one_clear_error(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings(**overrides)


def test_tls_settings_build_a_context_from_the_ca_file(tmp_path: Path) -> None:
    missing = Settings(
        bootstrap_servers="k:9093", security_protocol="SSL", ssl_cafile=tmp_path / "no.pem"
    )
    with pytest.raises(ConfigurationError, match="TLS files"):
        kafka_security(missing)
    plain_tls = Settings(bootstrap_servers="k:9093", security_protocol="SSL")
    options = client_options(plain_tls)
    assert options["security_protocol"] == "SSL"
    assert options["ssl_context"] is not None


def test_derive_validates_the_changed_settings_as_a_whole() -> None:
    settings = Settings(
        security_protocol="SASL_PLAINTEXT",
        bootstrap_servers="kafka:9092",
        sasl_mechanism="PLAIN",
        sasl_username="hub",
        sasl_password="s3cret",
        _env_file=None,
    )
    derived = settings.derive(sim_children=5000, municipality="liepaja")
    assert (derived.sim_children, derived.municipality) == (5000, "liepaja")
    assert derived.sasl_password is not None
    assert derived.sasl_password.get_secret_value() == "s3cret"
    assert settings.sim_children == 300  # the original is left as it was
    with pytest.raises(ConfigurationError, match=r"HUB_SIM_CHILDREN: .*greater than or equal"):
        settings.derive(sim_children=10)
    with pytest.raises(ConfigurationError, match="security_protocol SASL_PLAINTEXT needs"):
        settings.derive(sasl_username=None)
    with pytest.raises(ConfigurationError, match="no such setting: sim_childern"):
        settings.derive(sim_childern=500)
