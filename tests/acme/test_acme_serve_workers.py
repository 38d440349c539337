"""`keyward serve --workers N`: several API processes on SQLite or PostgreSQL, each with its own socket."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from conftest import POSTGRES_ADMIN_URL, tool_or_skip
from conftest import test_backend as backend_name

from api.cli import build_parser
from api.serve_multi import _port_taken, check_workers
from bench import acme_load
from core.errors import ConfigurationError


def test_workers_option_defaults_to_one_process() -> None:
    args = build_parser().parse_args(["serve"])
    assert args.workers == 1
    assert build_parser().parse_args(["serve", "--workers", "3"]).workers == 3


def test_several_processes_need_a_shared_database() -> None:
    check_workers(1, "sqlite://keyward.sqlite3")
    check_workers(2, "sqlite://keyward.sqlite3")
    check_workers(4, "postgres://postgres@127.0.0.1:5432/keyward")
    with pytest.raises(ConfigurationError, match="database file"):
        check_workers(2, "sqlite://:memory:")
    with pytest.raises(ConfigurationError, match="at least 1"):
        check_workers(0, "postgres://postgres@127.0.0.1:5432/keyward")


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # gone meanwhile
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found += children
        pending += children
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _server_side_inode(server_port: int, client_port: int) -> str:
    """The inode of the accepted socket serving the connection from `client_port` (Linux's /proc/net/tcp)."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return fields[9]
    raise AssertionError(f"no server-side socket for the connection from port {client_port}")


async def _serving_processes(pid: int, port: int, connections: int) -> dict[int, int]:
    """Open `connections` kept-alive connections, one request each: how many each process accepted."""
    opened: list[socket.socket] = []
    try:
        for _ in range(connections):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            opened.append(sock)
        inodes = {_server_side_inode(port, sock.getsockname()[1]) for sock in opened}
        return {
            process: len(inodes & _socket_inodes(process))
            for process in _descendants(pid)
            if inodes & _socket_inodes(process)
        }
    finally:
        for sock in opened:
            sock.close()


@pytest.mark.live
async def test_two_api_processes_each_take_connections_and_every_order_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept-alive connections opened in a burst reach both processes (on one shared socket, one process took
    them all), and concurrent ACME orders through both, on one database, all complete."""
    tool_or_skip("pebble-challtestsrv")
    monkeypatch.setattr(acme_load, "PG_ADMIN_URL", POSTGRES_ADMIN_URL)
    shape = acme_load.Shape(db=backend_name(), workers=2)
    with acme_load.challtestsrv() as dns:
        async with (
            acme_load.Responder() as responder,
            acme_load.keyward_server(tmp_path, dns, responder.port, shape=shape) as target,
        ):
            assert target.pid is not None
            port = int(target.directory_url.split(":")[2].split("/")[0])
            accepted = await _serving_processes(target.pid, port, connections=32)
            assert len(accepted) == 2, f"connections per process: {accepted}"
            result = await acme_load.run_load(target, responder, clients=8, seconds=3)
    assert result.failed == 0, result.errors[:3]
    assert result.completed >= 8, f"only {result.completed} orders in 3 s"


def test_a_taken_port_is_refused_not_shared() -> None:
    """SO_REUSEPORT would let the processes' sockets join whatever else listens there: it is checked first."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert _port_taken("127.0.0.1", port) is not None
    assert _port_taken("127.0.0.1", port) is None
