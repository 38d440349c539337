from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index


class Migration(migrations.Migration):
    dependencies = [("models", "0006_acme_lookup_indexes")]

    initial = False

    operations = [
        ops.AddField(
            model_name="AcmeOrder",
            name="replaces",
            field=fields.CharField(null=True, max_length=512),
        ),
        ops.AddField(
            model_name="AcmeOrder",
            name="replaces_certificate",
            field=fields.ForeignKeyField(
                "models.Certificate",
                source_field="replaces_certificate_id",
                null=True,
                db_constraint=True,
                to_field="id",
                related_name="replacing_orders",
                on_delete=OnDelete.SET_NULL,
            ),
        ),
        ops.AddIndex(
            model_name="AcmeOrder",
            index=Index(fields=["replaces_certificate_id"]),
        ),
    ]
