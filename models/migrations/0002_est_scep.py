from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ScepChallenge',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('attachment', fields.ForeignKeyField('models.ApplicationProfile', source_field='attachment_id', db_constraint=True, to_field='id', related_name='scep_challenges', on_delete=OnDelete.CASCADE)),
                ('challenge_hash', fields.CharField(unique=True, max_length=64)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('certificate', fields.ForeignKeyField('models.Certificate', source_field='certificate_id', null=True, db_constraint=True, to_field='id', related_name='scep_challenges', on_delete=OnDelete.CASCADE)),
                ('created_by', fields.ForeignKeyField('models.Principal', source_field='created_by_id', null=True, db_constraint=True, to_field='id', related_name='scep_challenges', on_delete=OnDelete.SET_NULL)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'scep_challenge', 'app': 'models', 'indexes': [Index(fields=['attachment_id', 'used_at', 'expires_at'])], 'pk_attr': 'id', 'table_description': 'A one-time challenge password, shown once to its creator and stored as a SHA-256 hash.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ScepTransaction',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('attachment', fields.ForeignKeyField('models.ApplicationProfile', source_field='attachment_id', db_constraint=True, to_field='id', related_name='scep_transactions', on_delete=OnDelete.CASCADE)),
                ('transaction_id', fields.CharField(max_length=128)),
                ('message_type', fields.CharField(max_length=4)),
                ('status', fields.CharField(max_length=16)),
                ('csr_der', fields.BinaryField(null=True)),
                ('certificate', fields.ForeignKeyField('models.Certificate', source_field='certificate_id', null=True, db_constraint=True, to_field='id', related_name='scep_transactions', on_delete=OnDelete.CASCADE)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'scep_transaction', 'app': 'models', 'indexes': [Index(fields=['attachment_id', 'transaction_id', 'created_at'])], 'pk_attr': 'id', 'table_description': 'One enrollment by transaction id: pending (awaiting approval), issued or failed.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='ApplicationProfile',
            name='est_client_ca_pem',
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name='ApplicationProfile',
            name='est_enabled',
            field=fields.BooleanField(default=False),
        ),
        ops.AddField(
            model_name='ApplicationProfile',
            name='est_passphrase_hash',
            field=fields.CharField(null=True, max_length=255),
        ),
        ops.AddField(
            model_name='ApplicationProfile',
            name='est_username',
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name='ApplicationProfile',
            name='scep_allow_renewal',
            field=fields.BooleanField(default=True),
        ),
        ops.AddField(
            model_name='ApplicationProfile',
            name='scep_challenge_mode',
            field=fields.CharField(default='static', max_length=16),
        ),
        ops.AddField(
            model_name='ApplicationProfile',
            name='scep_challenge_ttl_seconds',
            field=fields.IntField(default=3600),
        ),
        ops.AddField(
            model_name='ApplicationProfile',
            name='scep_enabled',
            field=fields.BooleanField(default=False),
        ),
        ops.AddField(
            model_name='ApplicationProfile',
            name='scep_include_ca',
            field=fields.BooleanField(default=True),
        ),
        ops.AddField(
            model_name='ApplicationProfile',
            name='scep_max_pending_challenges',
            field=fields.IntField(default=100),
        ),
        ops.AddField(
            model_name='ApplicationProfile',
            name='scep_ra_certificate_pem',
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name='ApplicationProfile',
            name='scep_ra_key_encrypted',
            field=fields.BinaryField(null=True),
        ),
        ops.AddField(
            model_name='ApplicationProfile',
            name='scep_static_challenge_hash',
            field=fields.CharField(null=True, max_length=255),
        ),
    ]
