"""`keyward migrate plan|apply PROJECT`: the migration assistant (SPEC §13) from the command line.

The CLI acts as the system actor of the legacy project's organization, like the other administrative
commands. `plan` prints the eight steps (or the plan document with --json); `apply` applies a fresh plan, or
the plan document saved with `plan --json > plan.json` (--plan FILE), refused when the project changed since.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import InvalidInput, KeywardError, NotFound, StalePlan


def add_parser(sub: Any, with_db: Callable[..., Any]) -> None:
    """Register `migrate plan` and `migrate apply` on the top-level subparsers."""
    migrate = sub.add_parser(
        "migrate", help="move a legacy project into Applications (the migration assistant)"
    )
    commands = migrate.add_subparsers(dest="migrate_command", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("project", metavar="PROJECT", help="the legacy project's slug or id")
        parser.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="APP=profile,profile",
            help="make application APP with these legacy profiles (repeat for several applications); "
            "default: one application named after the project with every profile",
        )
        parser.add_argument(
            "--role",
            action="append",
            default=[],
            metavar="MEMBER=ROLE",
            help="give legacy member MEMBER (email or name) this role (admin, operator, auditor or none) "
            "instead of the closest one; the plan lists what that drops and what it grants beyond the legacy "
            "role",
        )
        parser.add_argument("--org", help="the organization's name, when several have a project of that slug")
        parser.add_argument("--json", action="store_true", help="print JSON")

    plan = commands.add_parser("plan", help="review the legacy project and print the proposed steps 1-8")
    common(plan)
    plan.set_defaults(func=lambda args: _run(with_db, _plan, args))

    apply = commands.add_parser("apply", help="carry a plan out (one transaction per application)")
    common(apply)
    apply.add_argument("--dry-run", action="store_true", help="show what would be done; write nothing")
    apply.add_argument(
        "--disable-legacy-copies",
        action="store_true",
        help="switch off the legacy alerts (and the auto-sync of the legacy syncs) that were copied",
    )
    apply.add_argument(
        "--plan", metavar="FILE", help="a plan document saved by `keyward migrate plan --json`"
    )
    apply.set_defaults(func=lambda args: _run(with_db, _apply, args))


def _run(with_db: Callable[..., Any], work: Callable[..., Any], args: argparse.Namespace) -> int:
    try:
        return int(asyncio.run(with_db(lambda: work(args))))
    except StalePlan as error:
        print(f"keyward: {error.message}", file=sys.stderr)
        for change in error.details.get("changes", []):
            print(f"  - {change}", file=sys.stderr)
        print(f"keyward: make a new plan: keyward migrate plan {args.project}", file=sys.stderr)
        return 3
    except KeywardError as error:
        print(f"keyward: {error.message}", file=sys.stderr)
        return 2


async def _actor_and_project(args: argparse.Namespace) -> tuple[Any, Any]:
    from core.authz import Actor
    from models import LegacyProject, Organization

    query = LegacyProject.all()
    if args.org:
        organization = await Organization.get_or_none(name=args.org)
        if organization is None:
            raise NotFound(f"organization {args.org!r} not found")
        query = query.filter(organization_id=organization.id)
    try:
        found = await query.filter(id=uuid.UUID(args.project))
    except ValueError:
        found = await query.filter(slug=args.project)
    if not found:
        raise NotFound(f"legacy project {args.project!r} not found")
    if len(found) > 1:
        raise InvalidInput(
            f"several organizations have a legacy project {args.project!r}: name one with --org"
        )
    project = found[0]
    return Actor.system(project.organization_id, "keyward migrate"), project


async def _plan(args: argparse.Namespace) -> int:
    from core.legacy import migration

    actor, project = await _actor_and_project(args)
    plan = await migration.migration_plan(
        actor=actor, legacy_project_id=project.id, options=migration.parse_mapping(args.map, args.role)
    )
    document = plan.to_document()
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(render_plan(document))
    return 0


async def _apply(args: argparse.Namespace) -> int:
    from core.legacy import migration

    actor, project = await _actor_and_project(args)
    if args.plan:
        try:
            document = json.loads(await asyncio.to_thread(Path(args.plan).read_text))
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"--plan {args.plan}: cannot read a JSON plan document ({exc})") from None
        if not isinstance(document, dict) or document.get("projectId") != str(project.id):
            raise InvalidInput(f"--plan {args.plan} is not a plan of legacy project {project.slug!r}")
        if args.map or args.role:
            raise InvalidInput("--map and --role shape a new plan; a saved plan (--plan) keeps its own")
    else:
        plan = await migration.migration_plan(
            actor=actor, legacy_project_id=project.id, options=migration.parse_mapping(args.map, args.role)
        )
        document = plan.to_document()
    result = await migration.apply_migration(
        actor=actor,
        plan_document=document,
        dry_run=args.dry_run,
        disable_legacy_copies=args.disable_legacy_copies,
    )
    out = result.to_document()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(render_result(out))
    return 1 if any(a["status"] == "failed" for a in out["applications"]) else 0


# ---------------------------------------------------------------- text output


def _notices(title: str, items: list[dict[str, Any]]) -> list[str]:
    lines = [f"{title} ({len(items)})"]
    for item in items:
        where = f"[{item['application']}] " if item.get("application") else ""
        lines.append(f"  - {where}{item['message']}")
    return lines


def _guide_lines(guide: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for entry in guide:
        lines.append(f"  {entry['application']} / {entry['profile']} ({entry['method'].upper()})")
        old = str(entry["old"]).replace("\n", "\n           ")
        new = str(entry["new"]).replace("\n", "\n           ")
        lines.append(f"    old:   {old}")
        lines.append(f"    new:   {new}")
        if entry.get("newLabel"):
            lines.append(f"    label: {entry['newLabel']}")
        lines.append(f"    keeps: {entry['credentials']}")
        for note in entry.get("notes", []):
            lines.append(f"    note:  {note}")
    return lines or ["  (nothing to update)"]


def render_plan(document: dict[str, Any]) -> str:
    review = document["review"]
    apps = document["applications"]
    lines = [
        f"Migration plan for legacy project {document['projectSlug']} ({document['projectName']})",
        f"fingerprint {document['fingerprint']}",
        "",
        "Step 1 - review of the legacy project",
        "  Profiles:",
    ]
    for p in review["profiles"]:
        state = "deleted" if p["deleted"] else f"CA {p['ca']} ({p['caStatus']})"
        lines.append(f"    {p['slug']:<24} {str(p['method'] or '-').upper():<5} {state}")
    lines.append("  Alerts:")
    lines += [
        f"    {a['name']} ({', '.join(a['eventTypes'])}; profiles: {', '.join(a['profiles']) or 'all'})"
        + ("" if a["isActive"] else " [disabled]")
        for a in review["alerts"]
    ] or ["    none"]
    lines.append("  Syncs:")
    lines += [
        f"    {s['name']} ({s['destination']}; profiles: {', '.join(s['profiles']) or 'all'})"
        for s in review["syncs"]
    ] or ["    none"]
    lines.append("  Approval policies:")
    lines += [
        f"    {p['name']} (profiles: {', '.join(p['profiles'])}; {len(p['steps'])} step(s))"
        + ("" if p["isActive"] else " [inactive]")
        for p in review["approvalPolicies"]
    ] or ["    none"]
    lines.append("  Members:")
    lines += [
        f"    {m['name']} ({m['kind']}): {m['role']}" + (f" {m['customRole']}" if m["customRole"] else "")
        for m in review["members"]
    ] or ["    none"]

    def per_app(title: str, render: Callable[[dict[str, Any]], list[str]]) -> None:
        lines.extend(["", title])
        for app in apps:
            if app["status"] == "blocked":
                continue
            items = render(app)
            lines.append(f"  {app['name']}:" + ("" if items else " nothing"))
            lines.extend(f"    {item}" for item in items)

    lines += ["", "Step 2 - applications"]
    for app in apps:
        lines.append(f"  {app['name']}: {app['status']} ({app['pending']} thing(s) to do)")
    per_app(
        "Step 3 - profiles attached, enrollment copied with the same credentials",
        lambda a: [f"{p['slug']} ({', '.join(p['methods']) or '-'}): {p['status']}" for p in a["profiles"]],
    )
    per_app(
        "Step 4 - alerts recreated",
        lambda a: [
            f"{s['name']} (profiles: {', '.join(s['profiles']) or 'all'}): {s['status']}" for s in a["alerts"]
        ],
    )
    per_app(
        "Step 5 - syncs recreated",
        lambda a: [
            f"{s['name']} (profiles: {', '.join(s['profiles']) or 'all'}): {s['status']}" for s in a["syncs"]
        ],
    )
    per_app(
        "Step 6 - approval policies recreated",
        lambda a: [
            f"{s['name']} (profiles: {', '.join(s['profiles'])}; "
            + "; ".join(f"{x['required']} of {', '.join(x['approvers'])}" for x in s["steps"])
            + f"): {s['status']}"
            for s in a["approvalPolicies"]
        ],
    )
    per_app(
        "Step 7 - members",
        lambda a: [
            f"{m['name']}: {m['legacyRole']}{' ' + m['customRole'] if m['customRole'] else ''} -> "
            f"{m['role'].title()}{' (made Product Member)' if m['grantProductMember'] else ''}: {m['status']}"
            for m in a["members"]
        ],
    )
    lines += ["", "Step 8 - client update guide", *_guide_lines(document["clientGuide"]), ""]
    lines += _notices("Warnings", document["warnings"]) + [""] + _notices("Conflicts", document["conflicts"])
    lines += [
        "",
        f"Apply it: keyward migrate apply {document['projectSlug']} [--dry-run] [--disable-legacy-copies]",
    ]
    return "\n".join(lines)


def render_result(document: dict[str, Any]) -> str:
    lines = [document["message"], ""]
    for app in document["applications"]:
        created = ", ".join(f"{n} {k}" for k, n in app["created"].items() if n) or "nothing created"
        line = f"  {app['name']}: {app['status']} ({created})"
        if app.get("message"):
            line += f" - {app['errorCode'] or ''} {app['message']}".rstrip()
        lines.append(line)
    if document["disabledLegacyAlerts"] or document["disabledLegacySyncs"]:
        lines.append(
            "  legacy copies switched off: alerts "
            f"{', '.join(document['disabledLegacyAlerts']) or 'none'}; syncs (auto-sync off) "
            f"{', '.join(document['disabledLegacySyncs']) or 'none'}"
        )
    lines += ["", "Client update guide", *_guide_lines(document["clientGuide"])]
    return "\n".join(lines)
