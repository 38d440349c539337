from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index


class Migration(migrations.Migration):
    dependencies = [("models", "0005_legacy_projects")]

    initial = False

    operations = [
        ops.AddIndex(
            model_name="AcmeChallenge",
            index=Index(fields=["authorization_id"]),
        ),
        ops.AddIndex(
            model_name="AcmeOrder",
            index=Index(fields=["certificate_id"]),
        ),
    ]
