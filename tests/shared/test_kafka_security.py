"""Kafka clients authenticate as the settings say: TLS with the cluster's CA and SASL/SCRAM
per service (deploy/k8s/users.yaml), the same for aiokafka clients and Faust workers."""

from __future__ import annotations

import asyncio
import ssl

import certifi
import faust
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from shared.kafka import client_security, make_producer
from shared.settings import Settings
from shared.streams import faust_credentials, make_faust_app


def _sasl_ssl() -> Settings:
    return Settings(env="test", kafka_bootstrap="kafka-0:9093",
                    kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                    kafka_username="detection", kafka_password="s3cret-from-strimzi",
                    kafka_ca_file=certifi.where())


def test_plaintext_adds_nothing_but_the_protocol() -> None:
    settings = Settings(env="test")
    assert client_security(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None


def test_sasl_ssl_gives_aiokafka_the_user_and_a_tls_context() -> None:
    options = client_security(_sasl_ssl())
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "detection", "s3cret-from-strimzi")
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_the_relay_producer_uses_them() -> None:
    async def made() -> tuple[str, str, str]:
        client = make_producer(_sasl_ssl()).client
        return client._security_protocol, client._sasl_mechanism, client._sasl_plain_username

    assert asyncio.run(made()) == ("SASL_SSL", "SCRAM-SHA-512", "detection")


def test_faust_workers_get_the_same_credentials() -> None:
    settings = _sasl_ssl()
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    options = credentials_to_aiokafka_auth(credentials)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "detection"
    app = make_faust_app("security-test", settings)
    assert isinstance(app.conf.broker_credentials, faust.SASLCredentials)
    assert app.conf.broker_credentials.username == "detection"


def test_replication_factor_of_created_topics_is_a_setting() -> None:
    app = make_faust_app("rf-test", Settings(env="test", kafka_replication_factor=3))
    assert app.conf.topic_replication_factor == 3
