"""KEYWARD_LOG_FORMAT, KEYWARD_METRICS_TOKEN(_FILE), KEYWARD_WORKER_METRICS_*: validated, the token never
echoed in an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_settings
from core.errors import ConfigurationError


def test_defaults() -> None:
    settings = load_settings({})
    assert (settings.log_format, settings.metrics_token, settings.worker_metrics_port) == ("text", None, None)
    assert settings.worker_metrics_host == "127.0.0.1"


def test_values_and_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "metrics-token"
    token_file.write_text("scrape-token-from-a-file-123\n")
    settings = load_settings(
        {
            "KEYWARD_LOG_FORMAT": "JSON",
            "KEYWARD_METRICS_TOKEN_FILE": str(token_file),
            "KEYWARD_WORKER_METRICS_PORT": "9464",
            "KEYWARD_WORKER_METRICS_HOST": "0.0.0.0",
        }
    )
    assert settings.log_format == "json"
    assert settings.metrics_token == "scrape-token-from-a-file-123"
    assert (settings.worker_metrics_host, settings.worker_metrics_port) == ("0.0.0.0", 9464)
    assert "scrape-token" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KEYWARD_LOG_FORMAT": "xml"}, "KEYWARD_LOG_FORMAT"),
        ({"KEYWARD_WORKER_METRICS_PORT": "70000"}, "KEYWARD_WORKER_METRICS_PORT"),
        ({"KEYWARD_WORKER_METRICS_PORT": "http"}, "KEYWARD_WORKER_METRICS_PORT"),
        ({"KEYWARD_METRICS_TOKEN": "short-secret"}, "KEYWARD_METRICS_TOKEN"),
        ({"KEYWARD_METRICS_TOKEN": "a", "KEYWARD_METRICS_TOKEN_FILE": "/x"}, "KEYWARD_METRICS_TOKEN_FILE"),
        ({"KEYWARD_METRICS_TOKEN_FILE": "/nonexistent/token"}, "KEYWARD_METRICS_TOKEN_FILE"),
    ],
)
def test_bad_values_name_their_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(env)
    assert named in raised.value.message
    assert "short-secret" not in raised.value.message
