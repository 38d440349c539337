"""AWS Certificate Manager (import, re-import into the same ARN on renewal, delete) and AWS Secrets Manager
(create, put a new value, delete). boto3 is synchronous: every call runs in a thread with bounded timeouts."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from core.alert import validate_url
from core.errors import InvalidInput
from core.sync_destinations import Material, SyncFailure, Target
from core.sync_destinations.common import CONNECT_TIMEOUT_SECONDS, TOTAL_TIMEOUT_SECONDS, only_keys, text
from models.sync import SyncFormat

_KEYS = {"region", "endpointUrl"}
_CREDENTIALS = {"accessKeyId", "secretAccessKey", "sessionToken", "keystorePassword"}
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_BOTO_CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT_SECONDS,
    read_timeout=TOTAL_TIMEOUT_SECONDS,
    retries={"max_attempts": 2, "mode": "standard"},  # the sync runner retries with its own backoff
)


def _check(connection: dict[str, Any], credentials: dict[str, str], what: str) -> dict[str, Any]:
    only_keys(connection, _KEYS, what)
    unknown = sorted(set(credentials) - _CREDENTIALS)
    if unknown:
        raise InvalidInput(f"unknown {what} credential(s) {', '.join(unknown)}", field="credentials")
    if not credentials.get("accessKeyId") or not credentials.get("secretAccessKey"):
        raise InvalidInput(
            f"{what} needs credentials.accessKeyId and credentials.secretAccessKey", field="credentials"
        )
    region = text(connection, "region", limit=32)
    assert region is not None
    if not _REGION.match(region):
        raise InvalidInput(
            f"connection.region {region!r} is not an AWS region like eu-west-1", field="connection.region"
        )
    checked: dict[str, Any] = {"region": region}
    if connection.get("endpointUrl"):
        checked["endpointUrl"] = validate_url(
            connection["endpointUrl"], "connection.endpointUrl", "the AWS endpoint URL"
        )
    return checked


def _client(service: str, target: Target) -> Any:
    credentials = target.credentials
    return boto3.session.Session().client(
        service,
        region_name=target.connection["region"],
        endpoint_url=target.connection.get("endpointUrl") or None,
        aws_access_key_id=credentials["accessKeyId"],
        aws_secret_access_key=credentials["secretAccessKey"],
        aws_session_token=credentials.get("sessionToken") or None,
        config=_BOTO_CONFIG,
    )


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _failure(service: str, error: Exception) -> SyncFailure:
    if isinstance(error, ClientError):
        code = _code(error)
        message = str(error.response.get("Error", {}).get("Message", ""))[:200]
        return SyncFailure(f"{service} refused the request: {code}" + (f": {message}" if message else ""))
    return SyncFailure(f"cannot reach {service}: {type(error).__name__}")


async def _call(service: str, work: Any) -> Any:
    try:
        async with asyncio.timeout(TOTAL_TIMEOUT_SECONDS * 2):
            return await asyncio.to_thread(work)
    except TimeoutError:
        raise SyncFailure(f"{service} did not answer in time") from None
    except (ClientError, BotoCoreError) as error:
        raise _failure(service, error) from None


def _tags(material: Material, target: Target) -> list[dict[str, str]]:
    return [
        {"Key": "keyward:certificateId", "Value": str(material.certificate_id)},
        {"Key": "keyward:sync", "Value": target.sync_name[:256]},
    ]


class AwsCertificateManager:
    reuses_reference = True  # a renewal re-imports into the predecessor's ARN

    def check(self, connection: dict[str, Any], credentials: dict[str, str]) -> dict[str, Any]:
        return _check(connection, credentials, "AWS Certificate Manager")

    async def push(self, target: Target, material: Material, reference: str | None) -> str:
        if material.private_key_pem is None:
            raise SyncFailure(
                "AWS Certificate Manager imports a certificate with its private key, and the server does not "
                "hold this one's (or the sync excludes keys)",
                retryable=False,
            )
        if material.format != SyncFormat.PEM:
            raise SyncFailure("AWS Certificate Manager takes PEM only", retryable=False)

        def work() -> str:
            client = _client("acm", target)
            arguments: dict[str, Any] = {
                "Certificate": material.certificate_pem.encode(),
                "PrivateKey": material.private_key_pem.encode() if material.private_key_pem else b"",
            }
            if material.chain_pems:
                arguments["CertificateChain"] = "".join(material.chain_pems).encode()
            if reference:
                try:
                    client.import_certificate(CertificateArn=reference, **arguments)
                    return reference
                except ClientError as error:
                    if _code(error) != "ResourceNotFoundException":
                        raise
            answer = client.import_certificate(Tags=_tags(material, target), **arguments)
            return str(answer["CertificateArn"])

        return str(await _call("AWS Certificate Manager", work))

    async def remove(self, target: Target, reference: str, certificate_id: uuid.UUID) -> None:
        def work() -> None:
            try:
                _client("acm", target).delete_certificate(CertificateArn=reference)
            except ClientError as error:
                if _code(error) != "ResourceNotFoundException":
                    raise

        await _call("AWS Certificate Manager", work)


def secret_value(material: Material) -> dict[str, Any]:
    """SecretString JSON for PEM; SecretBinary (PKCS#12 / JKS bytes) otherwise."""
    if material.format == SyncFormat.PEM:
        value: dict[str, Any] = {
            "certificate": material.certificate_pem,
            "chain": "".join(material.chain_pems),
            "certificateId": str(material.certificate_id),
            "serialNumber": material.serial,
            "notAfter": material.not_after.isoformat(),
        }
        if material.private_key_pem is not None:
            value["privateKey"] = material.private_key_pem
        return {"SecretString": json.dumps(value, sort_keys=True)}
    assert material.bundle is not None
    return {"SecretBinary": material.bundle}


class AwsSecretsManager:
    reuses_reference = False

    def check(self, connection: dict[str, Any], credentials: dict[str, str]) -> dict[str, Any]:
        return _check(connection, credentials, "AWS Secrets Manager")

    async def push(self, target: Target, material: Material, reference: str | None) -> str:
        value = secret_value(material)

        def work() -> str:
            client = _client("secretsmanager", target)
            try:
                answer = client.create_secret(
                    Name=material.name,
                    Description=f"Keyward certificate {material.certificate_id}",
                    Tags=_tags(material, target),
                    **value,
                )
            except ClientError as error:
                if _code(error) != "ResourceExistsException":
                    raise
                answer = client.put_secret_value(SecretId=material.name, **value)
            return str(answer["ARN"])

        return str(await _call("AWS Secrets Manager", work))

    async def remove(self, target: Target, reference: str, certificate_id: uuid.UUID) -> None:
        def work() -> None:
            try:
                _client("secretsmanager", target).delete_secret(
                    SecretId=reference, ForceDeleteWithoutRecovery=True
                )
            except ClientError as error:
                if _code(error) != "ResourceNotFoundException":
                    raise

        await _call("AWS Secrets Manager", work)
