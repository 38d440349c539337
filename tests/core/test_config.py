from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from core.config import DEFAULT_KEK_FILE, Settings, load_or_create_kek, load_settings
from core.errors import ConfigurationError


def test_defaults_are_the_embedded_setup() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.database_url == "sqlite://./data/keyward.sqlite3"
    assert settings.public_url == "http://127.0.0.1:8000"


def test_postgres_url_and_public_url_are_taken() -> None:
    settings = load_settings(
        {
            "KEYWARD_DATABASE_URL": "postgres://kw@db:5432/keyward",
            "KEYWARD_PUBLIC_URL": "https://pki.example.com/",
        }
    )
    assert settings.database_url == "postgres://kw@db:5432/keyward"
    assert settings.public_url == "https://pki.example.com"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KEYWARD_DATABSE_URL": "sqlite://x"}, "unknown setting(s) KEYWARD_DATABSE_URL"),
        ({"KEYWARD_DATABASE_URL": "mysql://x/y"}, "KEYWARD_DATABASE_URL='mysql://x/y' is not supported"),
        ({"KEYWARD_DATABASE_URL": "postgres://host:5432"}, "names no database"),
        ({"KEYWARD_PUBLIC_URL": "pki.example.com"}, "must be an absolute http(s) URL"),
        ({"KEYWARD_SESSION_TTL_HOURS": "soon"}, "KEYWARD_SESSION_TTL_HOURS='soon'"),
        ({"KEYWARD_LOG_LEVEL": "loud"}, "KEYWARD_LOG_LEVEL='loud'"),
    ],
)
def test_bad_settings_fail_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env)
    assert message in caught.value.message


def test_default_kek_is_created_once_with_mode_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = load_or_create_kek(DEFAULT_KEK_FILE)
    path = tmp_path / DEFAULT_KEK_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 32
    assert load_or_create_kek(DEFAULT_KEK_FILE) == first


def test_configured_kek_must_exist_and_be_private(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_or_create_kek(str(missing))
    loose = tmp_path / "loose.key"
    loose.write_text("AAAA\n")
    os.chmod(loose, 0o644)
    with pytest.raises(ConfigurationError, match="readable by others"):
        load_or_create_kek(str(loose))
    os.chmod(loose, 0o600)
    with pytest.raises(ConfigurationError, match="must hold 32 bytes"):
        load_or_create_kek(str(loose))
