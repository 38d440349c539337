from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0003_approvals_syncs')]

    initial = False

    operations = [
        ops.AddField(
            model_name='ApprovalRequest',
            name='renewal_of',
            field=fields.ForeignKeyField('models.Certificate', source_field='renewal_of_id', null=True, db_constraint=True, to_field='id', related_name='renewal_requests', on_delete=OnDelete.SET_NULL),
        ),
        ops.AddIndex(
            model_name='ApprovalRequest',
            index=Index(fields=['renewal_of_id', 'status']),
        ),
    ]
