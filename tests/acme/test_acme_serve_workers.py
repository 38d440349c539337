"""`keyward serve --workers N`: several API processes only on PostgreSQL."""

from __future__ import annotations

import pytest

from api.cli import build_parser
from api.serve_multi import check_workers
from core.errors import ConfigurationError


def test_workers_option_defaults_to_one_process() -> None:
    args = build_parser().parse_args(["serve"])
    assert args.workers == 1
    assert build_parser().parse_args(["serve", "--workers", "3"]).workers == 3


def test_several_processes_need_postgresql() -> None:
    check_workers(1, "sqlite://keyward.sqlite3")
    check_workers(4, "postgres://postgres@127.0.0.1:5432/keyward")
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        check_workers(2, "sqlite://keyward.sqlite3")
    with pytest.raises(ConfigurationError, match="at least 1"):
        check_workers(0, "postgres://postgres@127.0.0.1:5432/keyward")
