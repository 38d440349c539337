"""SSH/SFTP host: the host key is pinned (no trust on first use); a private key or a password, sealed.

Files are written to a temporary name, given their mode, then renamed over the final name
(posix-rename@openssh.com), so a reader never sees half a file and a key is never world-readable.
"""

from __future__ import annotations

import asyncio
import posixpath
import uuid
from typing import Any

import asyncssh

from core.errors import InvalidInput
from core.sync_destinations import Material, SyncFailure, Target
from core.sync_destinations.common import (
    CONNECT_TIMEOUT_SECONDS,
    TOTAL_TIMEOUT_SECONDS,
    absolute_posix_directory,
    integer,
    only_credentials,
    only_keys,
    text,
)
from core.sync_destinations.local import files_for, related_paths

_KEYS = {"host", "port", "username", "hostKey", "directory"}
_CREDENTIALS = {"privateKey", "privateKeyPassphrase", "password", "keystorePassword"}


def _host_key(line: str) -> asyncssh.SSHKey:
    """An OpenSSH public key (`ssh-ed25519 AAAA...`), or a known_hosts line (`host ssh-... AAAA`)."""
    parts = line.split()
    for start in range(len(parts)):
        try:
            return asyncssh.import_public_key(" ".join(parts[start : start + 2]))
        except (asyncssh.KeyImportError, ValueError):
            continue
    raise InvalidInput(
        "connection.hostKey must be the server's public host key, e.g. the line of "
        "/etc/ssh/ssh_host_ed25519_key.pub",
        field="connection.hostKey",
    )


class SftpHost:
    reuses_reference = False

    def check(self, connection: dict[str, Any], credentials: dict[str, str]) -> dict[str, Any]:
        only_keys(connection, _KEYS, "SFTP")
        only_credentials(credentials, _CREDENTIALS, "SFTP")
        host = text(connection, "host", limit=255)
        username = text(connection, "username", limit=128)
        host_key = text(connection, "hostKey", limit=16384)
        assert host is not None and username is not None and host_key is not None
        key = _host_key(host_key)
        if not credentials.get("privateKey") and not credentials.get("password"):
            raise InvalidInput(
                "an SFTP sync needs credentials.privateKey or credentials.password", field="credentials"
            )
        if credentials.get("privateKey"):
            try:
                asyncssh.import_private_key(
                    credentials["privateKey"], credentials.get("privateKeyPassphrase") or None
                )
            except (asyncssh.KeyImportError, ValueError):
                raise InvalidInput(
                    "credentials.privateKey is not a readable private key (or its passphrase is wrong)",
                    field="credentials.privateKey",
                ) from None
        return {
            "host": host,
            "port": integer(connection, "port", 22, 1, 65535),
            "username": username,
            "hostKey": key.export_public_key().decode().strip(),
            "directory": absolute_posix_directory(connection),
        }

    def _connect(self, target: Target) -> Any:
        config = target.connection
        credentials = target.credentials
        client_keys = None
        if credentials.get("privateKey"):
            client_keys = [
                asyncssh.import_private_key(
                    credentials["privateKey"], credentials.get("privateKeyPassphrase") or None
                )
            ]
        return asyncssh.connect(
            config["host"],
            port=int(config.get("port") or 22),
            username=config["username"],
            known_hosts=([asyncssh.import_public_key(config["hostKey"])], [], []),
            client_keys=client_keys,
            password=credentials.get("password") or None,
            agent_path=None,
            config=None,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            login_timeout=CONNECT_TIMEOUT_SECONDS,
            keepalive_interval=0,
        )

    async def _session(self, target: Target, work: Any) -> Any:
        where = f"{target.connection.get('host')}:{target.connection.get('port') or 22}"
        try:
            async with asyncio.timeout(TOTAL_TIMEOUT_SECONDS):
                async with self._connect(target) as conn, conn.start_sftp_client() as sftp:
                    return await work(sftp)
        except TimeoutError:
            raise SyncFailure(
                f"SFTP host {where} did not answer within {TOTAL_TIMEOUT_SECONDS:g} s"
            ) from None
        except asyncssh.HostKeyNotVerifiable:
            raise SyncFailure(f"SFTP host {where} presented a host key other than the pinned one") from None
        except asyncssh.PermissionDenied:
            raise SyncFailure(f"SFTP host {where} refused the credentials (permission denied)") from None
        except asyncssh.SFTPError as exc:
            raise SyncFailure(f"SFTP on {where} failed: {exc.reason}") from None
        except (OSError, asyncssh.Error) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
            raise SyncFailure(f"cannot reach SFTP host {where}: {reason}") from None

    async def push(self, target: Target, material: Material, reference: str | None) -> str:
        directory = str(target.connection["directory"])
        files = files_for(material, directory)

        async def work(sftp: asyncssh.SFTPClient) -> None:
            await sftp.makedirs(directory, exist_ok=True)
            for path, content, mode in files:
                temporary = posixpath.join(directory, f".keyward-{uuid.uuid4().hex}.tmp")
                try:
                    async with sftp.open(
                        temporary, "wb", attrs=asyncssh.SFTPAttrs(permissions=mode)
                    ) as handle:
                        await handle.write(content)
                    await sftp.chmod(temporary, mode)
                    await sftp.posix_rename(temporary, path)
                except BaseException:
                    try:
                        await sftp.remove(temporary)
                    except (asyncssh.SFTPError, OSError):
                        pass
                    raise

        await self._session(target, work)
        return files[0][0]

    async def remove(self, target: Target, reference: str, certificate_id: uuid.UUID) -> None:
        async def work(sftp: asyncssh.SFTPClient) -> None:
            for path in related_paths(reference):
                try:
                    await sftp.remove(path)
                except asyncssh.SFTPNoSuchFile:
                    pass

        await self._session(target, work)
