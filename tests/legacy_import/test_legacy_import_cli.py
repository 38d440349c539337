"""`keyward legacy import FILE.json` as an operator runs it: a real subprocess on its own database (SQLite in
a temp directory, or a scratch PostgreSQL database under KEYWARD_TEST_DB=postgres)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from conftest import create_postgres_database, drop_postgres_database
from conftest import test_backend as database_backend
from legacy_import_support import EXAMPLE_PATH, ROOT, example, with_many_certificates


@pytest_asyncio.fixture
async def workdir(tmp_path: Path) -> AsyncIterator[tuple[Path, dict[str, str]]]:
    """A directory and environment for `keyward`, with a migrated database and organization acme."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    env["PYTHONPATH"] = str(ROOT)
    url = await create_postgres_database() if database_backend() == "postgres" else None
    if url is not None:
        env["KEYWARD_DATABASE_URL"] = url
    try:
        for args in (("db", "upgrade"), ("init", "--org", "acme", "--admin-email", "admin@acme.test")):
            result = await keyward(tmp_path, env, *args)
            assert result.returncode == 0, result.stderr
        yield tmp_path, env
    finally:
        if url is not None:
            await drop_postgres_database(url)


async def keyward(
    cwd: Path, env: dict[str, str], *args: str, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", *args],
        cwd=cwd,
        env=env,
        text=True,
        timeout=300,
        **streams,
    )


def write_json(path: Path, document: Any) -> str:
    path.write_text(json.dumps(document))
    return str(path)


async def test_import_prints_what_it_created_and_a_rerun_changes_nothing(
    workdir: tuple[Path, dict[str, str]],
) -> None:
    cwd, env = workdir
    first = await keyward(cwd, env, "legacy", "import", str(EXAMPLE_PATH))
    assert first.returncode == 0, first.stderr
    assert "Imported legacy project 'payments'" in first.stdout
    created = first.stdout.splitlines()[1]
    for part in (
        "1 project",
        "5 members",
        "1 CA",
        "2 policies",
        "4 profiles",
        "5 certificates",
        "1 alert",
        "1 sync",
    ):
        assert part in created, created
    assert "importing" not in first.stderr  # a small file finishes before a bar would help

    again = await keyward(cwd, env, "legacy", "import", str(EXAMPLE_PATH))
    assert again.returncode == 0, again.stderr
    assert "already imported from this file: nothing changed" in again.stdout
    assert "5 certificates" in again.stdout


async def test_a_bad_file_exits_non_zero_naming_every_problem(workdir: tuple[Path, dict[str, str]]) -> None:
    cwd, env = workdir
    document = example()
    document["profiles"][1]["ca"] = "nowhere"
    document["certificates"][0]["privateKeyPem"] = document["certificateAuthorities"][0]["privateKeyPem"]
    document["alerts"][0]["profiles"] = ["ghost"]
    result = await keyward(cwd, env, "legacy", "import", write_json(cwd / "bad.json", document))
    assert result.returncode == 2 and result.stdout == ""
    assert "3 problem(s); nothing was imported" in result.stderr
    for line in (
        "  $.profiles[1].ca: unknown certificate authority 'nowhere'",
        "  $.certificates[0].privateKeyPem: does not match the certificate's public key",
        "  $.alerts[0].profiles[0]: unknown profile 'ghost'",
    ):
        assert line in result.stderr.splitlines(), result.stderr

    (cwd / "broken.json").write_text('{"formatVersion": "1", ')
    broken = await keyward(cwd, env, "legacy", "import", str(cwd / "broken.json"))
    assert broken.returncode == 2 and "  $: not JSON:" in broken.stderr
    missing = await keyward(cwd, env, "legacy", "import", str(cwd / "missing.json"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr

    # Nothing was imported by any of them: the example still imports as new.
    good = await keyward(cwd, env, "legacy", "import", str(EXAMPLE_PATH))
    assert good.returncode == 0 and "Imported legacy project" in good.stdout


async def test_progress_lines_on_a_pipe(workdir: tuple[Path, dict[str, str]]) -> None:
    cwd, env = workdir
    path = write_json(cwd / "large.json", with_many_certificates(example(), 1200))
    result = await keyward(cwd, env, "legacy", "import", path)
    assert result.returncode == 0, result.stderr
    assert "1205 certificates" in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("importing")]
    assert "\r" not in result.stderr
    percents = [int(re.match(r"importing: (\d+)% \((\d+)/(\d+) items\)", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert percents[0] == 0 and percents[-1] == 100 and percents == sorted(set(percents))
    assert len(percents) >= 4  # certificates arrive in batches: some deciles are passed at once
    assert lines[-1].endswith("(1223/1223 items)")


async def test_progress_bar_redrawn_on_a_terminal(workdir: tuple[Path, dict[str, str]]) -> None:
    cwd, env = workdir
    path = write_json(cwd / "large.json", with_many_certificates(example(), 600))
    master, slave = pty.openpty()
    try:
        result = await keyward(cwd, env, "legacy", "import", path, stderr=slave, stdout=subprocess.PIPE)
    finally:
        os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO once the child's side is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    terminal = b"".join(chunks).decode()
    assert result.returncode == 0, terminal
    assert "\rimporting [" in terminal and "] 623/623 items" in terminal
    assert "importing:" not in terminal  # the line-per-10% form is for pipes and files


async def test_the_organization_is_named_when_there_are_several(workdir: tuple[Path, dict[str, str]]) -> None:
    cwd, env = workdir
    assert (
        await keyward(cwd, env, "init", "--org", "globex", "--admin-email", "admin@globex.test")
    ).returncode == 0
    ambiguous = await keyward(cwd, env, "legacy", "import", str(EXAMPLE_PATH))
    assert ambiguous.returncode == 2 and "--organization NAME" in ambiguous.stderr
    unknown = await keyward(cwd, env, "legacy", "import", str(EXAMPLE_PATH), "--organization", "initech")
    assert unknown.returncode == 2 and "no organization named 'initech'" in unknown.stderr
    named = await keyward(cwd, env, "legacy", "import", str(EXAMPLE_PATH), "--organization", "globex")
    assert named.returncode == 0 and "Imported legacy project 'payments'" in named.stdout
