"""Loopback servers for the benchmarks: a free port, a process started with its output in a log, waited
for until it listens, and stopped cleanly (SIGINT first, so a cProfile run writes its file)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(argv: list[str], *, env: dict[str, str], log: IO[bytes] | Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_port(
    port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0, sockets: int = 1
) -> None:
    """Until the port answers; with `sockets` above 1, until that many sockets listen on it (API processes
    with a socket each: a connection made before the last one listens never reaches it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if sockets > 1:
            if listening_sockets(port) >= sockets:
                return
        else:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def listening_sockets(port: int) -> int:
    """How many IPv4 sockets listen on `port` (Linux's /proc/net/tcp; state 0A is LISTEN)."""
    suffix = f":{port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1].endswith(suffix) and line.split()[3] == "0A")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
