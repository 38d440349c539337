"""`keyward migrate plan|apply PROJECT` as a real subprocess against the test database: a readable plan (steps
1-8, warnings, the URL guide) or JSON; a dry run that writes nothing; a saved plan applied, then applied again
(nothing to do); a saved plan refused once the legacy project changed, naming the change."""

from __future__ import annotations

import migration_support  # noqa: F401  # isort: skip - puts tests/acme, est, scep, worker on sys.path
import asyncio
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from conftest import OrgAdmin
from migration_support import cli_environment, import_example, keyward_binary

from core import alert as alert_service
from core.authz import Actor
from models import Alert, Application, LegacyMigration


@dataclass
class Ran:
    code: int
    out: str
    err: str


async def keyward(tmp_path: Path, *args: str) -> Ran:
    process = await asyncio.create_subprocess_exec(
        keyward_binary(),
        *args,
        env=cli_environment(tmp_path / "cli"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return Ran(int(process.returncode or 0), out.decode(), err.decode())


async def test_plan_then_apply_from_the_command_line(org_admin: OrgAdmin, tmp_path: Path) -> None:
    imported = await import_example(org_admin.organization_id)
    profile = imported.profile_ids

    text = await keyward(tmp_path, "migrate", "plan", "payments")
    assert text.code == 0, text.err
    for heading in ("Step 1", "Step 2", "Step 3", "Step 4", "Step 5", "Step 6", "Step 7", "Step 8"):
        assert heading in text.out
    assert f"/acme/profiles/{profile['web-acme']}/directory" in text.out
    assert f"/acme/applications/{{applicationId}}/profiles/{profile['web-acme']}/directory" in text.out
    assert "Bob Member: member -> Operator: create" in text.out
    assert "Warnings (4)" in text.out and "Conflicts (0)" in text.out
    assert "legacy-est-passphrase-2019" not in text.out

    mapped = await keyward(
        tmp_path, "migrate", "plan", str(imported.project_id), "--json",
        "--map", "payments-web=web-api,web-acme", "--map", "payments-devices=web-est,devices-scep",
    )  # fmt: skip
    assert mapped.code == 0, mapped.err
    assert [a["name"] for a in json.loads(mapped.out)["applications"]] == ["payments-web", "payments-devices"]

    saved = await keyward(tmp_path, "migrate", "plan", "payments", "--json")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(saved.out)

    dry = await keyward(tmp_path, "migrate", "apply", "payments", "--dry-run")
    assert dry.code == 0, dry.err
    assert dry.out.startswith("dry run: nothing was written")
    assert not await Application.filter(legacy=False).exists()

    applied = await keyward(tmp_path, "migrate", "apply", "payments", "--plan", str(plan_file))
    assert applied.code == 0, applied.err
    assert applied.out.startswith("migration applied")
    application = await Application.get(name="payments", legacy=False)
    assert f"/acme/applications/{application.id}/profiles/{profile['web-acme']}/directory" in applied.out
    rows = await LegacyMigration.all().count()

    again = await keyward(tmp_path, "migrate", "apply", "payments", "--plan", str(plan_file), "--json")
    assert again.code == 0, again.err
    result = json.loads(again.out)
    assert result["changed"] is False and result["message"].startswith("nothing to do")
    assert await LegacyMigration.all().count() == rows

    # The legacy project changes: the saved plan is refused and the change named; exit code 3.
    legacy_alert = await Alert.get(application_id=imported.project_id)
    await alert_service.update_alert(
        actor=Actor.system(org_admin.organization_id, "tests"), alert_id=legacy_alert.id, name="renamed-alert"
    )
    stale = await keyward(tmp_path, "migrate", "apply", "payments", "--plan", str(plan_file))
    assert stale.code == 3
    assert "changed since this plan was made" in stale.err
    assert "alert 'payments-expiry-and-issuance' renamed to 'renamed-alert'" in stale.err

    # Unknown projects and unreadable plans get a clear message and exit code 2.
    missing = await keyward(tmp_path, "migrate", "plan", "no-such-project")
    assert missing.code == 2 and "legacy project 'no-such-project' not found" in missing.err
    (tmp_path / "junk.json").write_text("{not json")
    junk = await keyward(tmp_path, "migrate", "apply", "payments", "--plan", str(tmp_path / "junk.json"))
    assert junk.code == 2 and "cannot read a JSON plan document" in junk.err
