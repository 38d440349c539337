"""`keyward legacy import FILE.json`: load a legacy project export (SPEC §12) from the command line.

Acts as the system actor of the organization (the one there is, or --organization NAME), like the other
administrative commands. Prints what it created on stdout; a progress bar on stderr for large files (redrawn
in place on a terminal, a line every 10% otherwise); every problem of a bad export with its JSON path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from core.errors import InvalidImport, InvalidInput, KeywardError, NotFound

# Exports with at least this many items show progress; smaller ones finish before a bar would help.
PROGRESS_THRESHOLD = 100
BAR_WIDTH = 30


def add_parser(sub: Any, with_db: Callable[..., Any]) -> None:
    """Register `legacy import` on the top-level subparsers."""
    legacy = sub.add_parser("legacy", help="legacy projects (the project model before Applications)")
    commands = legacy.add_subparsers(dest="legacy_command", required=True)
    load = commands.add_parser(
        "import",
        help="import a legacy project export (JSON, format v1): all or nothing, idempotent",
        description="Import a legacy project export. Re-running the same file changes nothing.",
    )
    load.add_argument("file", metavar="FILE.json", help="the export (core/legacy/export-v1.schema.json)")
    load.add_argument("--organization", help="the organization's name (needed when there are several)")
    load.set_defaults(func=lambda args: _run(with_db, args))


class ProgressBar:
    """items done / total on stderr: redrawn with \\r on a terminal, else one line per 10%."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last_decile = -1
        self.last_draw = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        if total < PROGRESS_THRESHOLD:
            return
        if self.tty:
            now = time.monotonic()
            if done < total and now - self.last_draw < 0.1:
                return
            self.last_draw = now
            filled = BAR_WIDTH * done // total
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self.stream.write(f"\rimporting [{bar}] {done}/{total} items")
            if done >= total:
                self.stream.write("\n")
            self.stream.flush()
            self.drawn = True
            return
        decile = 10 * done // total
        if decile > self.last_decile:
            self.last_decile = decile
            self.stream.write(f"importing: {decile * 10}% ({done}/{total} items)\n")
            self.stream.flush()
            self.drawn = True

    def interrupt(self) -> None:
        """End a half-drawn bar before printing errors."""
        if self.tty and self.drawn:
            self.stream.write("\n")


def _run(with_db: Callable[..., Any], args: argparse.Namespace) -> int:
    bar = ProgressBar(sys.stderr)
    try:
        document = _read(Path(args.file))
        report = asyncio.run(with_db(lambda: _import(args, document, bar)))
    except InvalidImport as error:
        bar.interrupt()
        print(f"keyward: {error.message}", file=sys.stderr)
        for problem in error.details.get("problems", []):
            print(f"  {problem['path']}: {problem['message']}", file=sys.stderr)
        return 2
    except KeywardError as error:
        bar.interrupt()
        print(f"keyward: {error.message}", file=sys.stderr)
        return 2
    _summary(report)
    return 0


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidImport(
            f"{path} is not UTF-8 text", problems=[{"path": "$", "message": "the file is not UTF-8 JSON"}]
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidImport(
            f"{path} is not JSON",
            problems=[
                {"path": "$", "message": f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"}
            ],
        ) from None


async def _import(args: argparse.Namespace, document: Any, progress: ProgressBar) -> Any:
    from core.authz import Actor
    from core.legacy.importer import import_legacy_project
    from models import Organization

    if args.organization:
        organization = await Organization.get_or_none(name=args.organization)
        if organization is None:
            raise NotFound(f"no organization named {args.organization!r}")
    else:
        organizations = await Organization.all().order_by("name").limit(2)
        if not organizations:
            raise NotFound("there is no organization yet: run `keyward init` first")
        if len(organizations) > 1:
            raise InvalidInput("there are several organizations: name one with --organization NAME")
        organization = organizations[0]
    actor = Actor.system(organization.id, "keyward legacy import")
    return await import_legacy_project(document, actor=actor, progress=progress)


_LABELS = {
    "ca": ("CA", "CAs"),
    "ca_reference": ("reference to an existing CA", "references to existing CAs"),
    "policy": ("policy", "policies"),
    "approval_policy": ("approval policy", "approval policies"),
}


def _counts(counts: dict[str, int]) -> str:
    def label(kind: str, count: int) -> str:
        one, many = _LABELS.get(kind, (kind.replace("_", " "), kind.replace("_", " ") + "s"))
        return f"{count} {one if count == 1 else many}"

    return ", ".join(label(kind, count) for kind, count in counts.items())


def _summary(report: Any) -> None:
    if not report.created:
        print(
            f"Legacy project {report.project_slug!r} ({report.project_id}) was already imported from this "
            f"file: nothing changed.\n  existing: {_counts(report.existing)}"
        )
        return
    print(f"Imported legacy project {report.project_slug!r} ({report.project_id}).")
    print(f"  created: {_counts(report.created)}")
