"""Local directory on the worker's host: atomic writes (temp file + rename), key files 0600, an optional
post-sync command (only where KEYWARD_SYNC_POST_COMMANDS allows it) with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import tempfile
import uuid
from typing import Any

from core import runtime
from core.errors import InvalidInput
from core.sync_destinations import Material, SyncFailure, Target
from core.sync_destinations.common import absolute_posix_directory, integer, only_credentials, only_keys, text
from models.sync import SyncFormat

KEY_MODE = 0o600
CERT_MODE = 0o644
DEFAULT_COMMAND_TIMEOUT = 30
MAX_COMMAND_TIMEOUT = 600
_KEYS = {"directory", "postCommand", "postCommandTimeoutSeconds"}


def files_for(material: Material, directory: str) -> list[tuple[str, bytes, int]]:
    """(path, content, mode) to write: PEM gives <name>.crt (leaf + chain) and <name>.key; else one file."""
    base = os.path.join(directory, material.name)
    if material.format == SyncFormat.PEM:
        files = [(base + ".crt", material.fullchain_pem.encode(), CERT_MODE)]
        if material.private_key_pem is not None:
            files.append((base + ".key", material.private_key_pem.encode(), KEY_MODE))
        return files
    assert material.bundle is not None
    mode = KEY_MODE if material.private_key_pem is not None else CERT_MODE
    return [(f"{base}.{material.bundle_extension}", material.bundle, mode)]


def related_paths(reference: str) -> list[str]:
    """The files a reference stands for: a .crt has its .key beside it."""
    if reference.endswith(".crt"):
        return [reference, reference[: -len(".crt")] + ".key"]
    return [reference]


def _write_atomically(path: str, content: bytes, mode: int) -> None:
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".keyward-", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # before any byte is written: a key is never readable by others, even briefly
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _push_files(directory: str, files: list[tuple[str, bytes, int]]) -> None:
    os.makedirs(directory, mode=0o755, exist_ok=True)
    for path, content, mode in files:
        _write_atomically(path, content, mode)


def _remove_files(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def run_post_command(command: str, seconds: int, env: dict[str, str]) -> None:
    """Run the command (no shell) once; a non-zero exit or the timeout fails the push (and it is retried)."""
    argv = shlex.split(command)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
            start_new_session=True,
        )
    except OSError as exc:
        raise SyncFailure(f"the post-sync command cannot start: {exc.strerror or exc}") from None
    try:
        output, _ = await asyncio.wait_for(process.communicate(), seconds)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        raise SyncFailure(
            f"the post-sync command did not finish within {seconds} s (timed out); killed"
        ) from None
    if process.returncode != 0:
        tail = " ".join(output.decode(errors="replace").split())[-300:]
        raise SyncFailure(
            f"the post-sync command exited with status {process.returncode}" + (f": {tail}" if tail else "")
        )


def _check_directory_allowed(directory: str) -> None:
    roots = runtime.settings().sync_local_roots
    if not roots:
        raise InvalidInput(
            "local directory syncs are turned off on this server: the operator lists the directories "
            "they may write under in KEYWARD_SYNC_LOCAL_ROOTS",
            field="connection.directory",
        )
    real = os.path.realpath(directory)
    for root in roots:
        root_real = os.path.realpath(root)
        if real == root_real or real.startswith(root_real.rstrip("/") + "/"):
            return
    raise InvalidInput(
        f"connection.directory {directory!r} is outside the directories this server allows for syncs "
        f"({', '.join(roots)})",
        field="connection.directory",
    )


class LocalDirectory:
    reuses_reference = False

    def check(self, connection: dict[str, Any], credentials: dict[str, str]) -> dict[str, Any]:
        only_keys(connection, _KEYS, "local directory")
        only_credentials(credentials, {"keystorePassword"}, "local directory")
        directory = absolute_posix_directory(connection)
        _check_directory_allowed(directory)
        checked: dict[str, Any] = {"directory": directory}
        command = text(connection, "postCommand", required=False)
        if command is not None:
            if not runtime.settings().sync_post_commands:
                raise InvalidInput(
                    "post-sync commands are turned off on this server (KEYWARD_SYNC_POST_COMMANDS)",
                    field="connection.postCommand",
                )
            try:
                argv = shlex.split(command)
            except ValueError as exc:
                raise InvalidInput(
                    f"connection.postCommand cannot be parsed: {exc}", field="connection.postCommand"
                ) from None
            if not argv or not os.path.isabs(argv[0]):
                raise InvalidInput(
                    "connection.postCommand must start with an absolute program path, "
                    "e.g. /usr/sbin/nginx -s reload",
                    field="connection.postCommand",
                )
            checked["postCommand"] = command
            checked["postCommandTimeoutSeconds"] = integer(
                connection, "postCommandTimeoutSeconds", DEFAULT_COMMAND_TIMEOUT, 1, MAX_COMMAND_TIMEOUT
            )
        return checked

    async def _after(self, target: Target, env: dict[str, str]) -> None:
        command = target.connection.get("postCommand")
        if command:
            timeout = int(target.connection.get("postCommandTimeoutSeconds") or DEFAULT_COMMAND_TIMEOUT)
            await run_post_command(command, timeout, env)

    async def push(self, target: Target, material: Material, reference: str | None) -> str:
        directory = str(target.connection["directory"])
        files = files_for(material, directory)
        try:
            await asyncio.to_thread(_push_files, directory, files)
        except OSError as exc:
            raise SyncFailure(f"cannot write into {directory}: {exc.strerror or exc}") from None
        await self._after(
            target,
            {
                "SYNC_ACTION": "push",
                "SYNC_CERTIFICATE_ID": str(material.certificate_id),
                "SYNC_FILES": " ".join(path for path, _, _ in files),
            },
        )
        return files[0][0]

    async def remove(self, target: Target, reference: str, certificate_id: uuid.UUID) -> None:
        paths = related_paths(reference)
        try:
            await asyncio.to_thread(_remove_files, paths)
        except OSError as exc:
            raise SyncFailure(f"cannot remove {reference}: {exc.strerror or exc}") from None
        await self._after(
            target,
            {
                "SYNC_ACTION": "remove",
                "SYNC_CERTIFICATE_ID": str(certificate_id),
                "SYNC_FILES": " ".join(paths),
            },
        )
