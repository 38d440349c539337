from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops

from models import attachment_generation


def _collected(schema_editor: Any) -> list[str] | None:
    return schema_editor.collected_sql if schema_editor.collect_sql else None


async def _install(apps: Any, schema_editor: Any) -> None:
    await attachment_generation.install(schema_editor.client, _collected(schema_editor))


async def _remove(apps: Any, schema_editor: Any) -> None:
    await attachment_generation.remove(schema_editor.client, _collected(schema_editor))


class Migration(migrations.Migration):
    dependencies = [("models", "0007_acme_order_replaces")]

    initial = False

    # SQLite only (models/attachment_generation.py): the counter the ACME attachment cache checks.
    operations = [ops.RunPython(_install, _remove)]
