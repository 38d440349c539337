"""The `keyward` command as an operator runs it, on a fresh SQLite database in a temp directory."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def keyward(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )


def test_init_prints_a_token_once_and_refuses_a_second_org_of_that_name(tmp_path: Path) -> None:
    assert keyward(tmp_path, "db", "upgrade").returncode == 0
    first = keyward(tmp_path, "init", "--org", "acme", "--admin-email", "Admin@Acme.test")
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip()
    assert token.startswith("kw_") and len(token) > 40
    assert "shown once" in first.stderr
    kek = tmp_path / "data" / "kek.key"
    assert not kek.exists() or oct(kek.stat().st_mode & 0o777) == "0o600"
    with sqlite3.connect(tmp_path / "data" / "keyward.sqlite3") as conn:
        stored = [row[0] for row in conn.execute("SELECT token_hash FROM api_token")]
        emails = [row[0] for row in conn.execute("SELECT email FROM principal")]
    assert token not in stored and len(stored[0]) == 64
    assert emails == ["admin@acme.test"]

    again = keyward(tmp_path, "init", "--org", "acme", "--admin-email", "other@acme.test")
    assert again.returncode == 2
    assert "organization 'acme' already exists" in again.stderr


def test_unknown_setting_fails_at_start_with_its_name(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")} | {"KEYWARD_PUBLIC_UR": "x"}
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "db", "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown setting(s) KEYWARD_PUBLIC_UR" in result.stderr


def test_audit_verify_detects_a_changed_row(tmp_path: Path) -> None:
    assert keyward(tmp_path, "db", "upgrade").returncode == 0
    assert keyward(tmp_path, "init", "--org", "acme", "--admin-email", "a@acme.test").returncode == 0
    ok = keyward(tmp_path, "audit", "verify")
    assert ok.returncode == 0 and "intact: 1 entries" in ok.stdout
    with sqlite3.connect(tmp_path / "data" / "keyward.sqlite3") as conn:
        conn.execute("UPDATE audit_event SET action = 'nothing.to.see'")
    tampered = keyward(tmp_path, "audit", "verify")
    assert tampered.returncode == 1
    assert "TAMPERED" in tampered.stderr
