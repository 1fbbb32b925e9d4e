"""The Kafka client configuration the security settings produce, checked against aiokafka's
own parameters and clients (built, never connected)."""

from __future__ import annotations

import inspect
import ssl
import subprocess
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from daemon.errors import ConfigError
from daemon.kafka import client_options
from daemon.settings import KafkaSettings

NOWHERE = "127.0.0.1:1"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate (it is its own CA) and its key."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "ca.pem", directory / "ca.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=codegend-test-ca",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def kafka(**values) -> KafkaSettings:
    return KafkaSettings(client_id="codegend-test", **values)


def test_plaintext_sends_no_credentials_and_no_tls():
    assert client_options(kafka()) == {
        "client_id": "codegend-test",
        "security_protocol": "PLAINTEXT",
    }


def test_ssl_verifies_the_brokers_against_the_ca_file(certificate):
    cert, _ = certificate
    options = client_options(kafka(security_protocol="SSL", ssl_cafile=str(cert)))
    assert set(options) == {"client_id", "security_protocol", "ssl_context"}
    context: ssl.SSLContext = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    subjects = [dict(item[0] for item in ca["subject"]) for ca in context.get_ca_certs()]
    assert {"commonName": "codegend-test-ca"} in subjects


def test_ssl_presents_a_client_certificate(certificate):
    cert, key = certificate
    options = client_options(
        kafka(
            security_protocol="SSL",
            ssl_cafile=str(cert),
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
        )
    )
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def test_sasl_plaintext_plain():
    options = client_options(
        kafka(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="codegend",
            sasl_password="plain-secret",
        )
    )
    assert options == {
        "client_id": "codegend-test",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "codegend",
        "sasl_plain_password": "plain-secret",
    }


def test_sasl_without_a_mechanism_is_plain():
    options = client_options(
        kafka(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p")
    )
    assert options["sasl_mechanism"] == "PLAIN"


def test_sasl_ssl_scram_sha_512_takes_the_same_credential_parameters(certificate):
    cert, _ = certificate
    options = client_options(
        kafka(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="codegend",
            sasl_password="scram-secret",
            ssl_cafile=str(cert),
        )
    )
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "codegend",
        "scram-secret",
    )
    assert isinstance(options["ssl_context"], ssl.SSLContext)


@pytest.mark.parametrize("client", [AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient])
def test_every_option_is_a_parameter_of_every_client(client, certificate):
    cert, _ = certificate
    options = client_options(
        kafka(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_username="u",
            sasl_password="p",
            ssl_cafile=str(cert),
        )
    )
    assert set(options) <= set(inspect.signature(client.__init__).parameters)


async def test_the_clients_take_the_configuration(certificate):
    cert, _ = certificate
    options = client_options(
        kafka(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="codegend",
            sasl_password="scram-secret",
            ssl_cafile=str(cert),
        )
    )
    producer = AIOKafkaProducer(bootstrap_servers=NOWHERE, **options)
    consumer = AIOKafkaConsumer(bootstrap_servers=NOWHERE, **options)
    admin = AIOKafkaAdminClient(bootstrap_servers=NOWHERE, **options)
    try:
        for client in (producer.client, consumer._client, admin._client):
            assert client._security_protocol == "SASL_SSL"
            assert client._sasl_mechanism == "SCRAM-SHA-512"
            assert client._sasl_plain_username == "codegend"
            assert client._ssl_context is options["ssl_context"]
    finally:
        await producer.stop()
        await consumer.stop()
        await admin.close()


def test_a_missing_ca_file_is_a_config_error(tmp_path):
    missing = tmp_path / "no-ca.pem"
    with pytest.raises(ConfigError, match=f"kafka.ssl_cafile: no file at {missing}"):
        client_options(kafka(security_protocol="SSL", ssl_cafile=str(missing)))


def test_a_file_that_is_no_certificate_is_a_config_error(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="kafka.ssl_cafile"):
        client_options(kafka(security_protocol="SASL_SSL", ssl_cafile=str(junk), **_login()))


def test_sasl_without_credentials_is_a_config_error():
    with pytest.raises(ConfigError, match="kafka.sasl_username and kafka.sasl_password"):
        client_options(kafka(security_protocol="SASL_PLAINTEXT", sasl_username="u"))


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"sasl_mechanism": "PLAIN"}, "kafka.sasl_mechanism"),
        ({"security_protocol": "SASL_PLAINTEXT", "ssl_cafile": "ca.pem"}, "kafka.ssl_cafile"),
    ],
)
def test_settings_the_protocol_would_ignore_are_config_errors(values, key):
    if values.get("security_protocol", "").startswith("SASL"):
        values = {**values, **_login()}
    with pytest.raises(ConfigError, match=key):
        client_options(kafka(**values))


def _login() -> dict[str, str]:
    return {"sasl_username": "u", "sasl_password": "p"}
