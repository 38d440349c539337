from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0004_approval_renewals')]

    initial = False

    operations = [
        ops.CreateModel(
            name='LegacyProject',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('organization', fields.ForeignKeyField('models.Organization', source_field='organization_id', db_constraint=True, to_field='id', related_name='legacy_projects', on_delete=OnDelete.CASCADE)),
                ('application', fields.OneToOneField('models.Application', source_field='application_id', db_constraint=True, to_field='id', related_name='legacy_project', on_delete=OnDelete.CASCADE)),
                ('slug', fields.CharField(max_length=100)),
                ('name', fields.CharField(max_length=200)),
                ('description', fields.TextField(default='', unique=False)),
                ('format_version', fields.CharField(max_length=16)),
                ('source_sha256', fields.CharField(max_length=64)),
                ('imported_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'legacy_project', 'app': 'models', 'unique_together': (('organization_id', 'slug'),), 'pk_attr': 'id', 'table_description': 'One imported legacy project. `id` equals the id of its container application.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LegacyMigration',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('project', fields.ForeignKeyField('models.LegacyProject', source_field='project_id', db_constraint=True, to_field='id', related_name='migrations', on_delete=OnDelete.CASCADE)),
                ('application', fields.ForeignKeyField('models.Application', source_field='application_id', db_constraint=True, to_field='id', related_name='migrated_from', on_delete=OnDelete.CASCADE)),
                ('source_kind', fields.CharField(max_length=24)),
                ('source_id', fields.UUIDField()),
                ('target_id', fields.UUIDField()),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'legacy_migration', 'app': 'models', 'unique_together': (('project_id', 'application_id', 'source_kind', 'source_id'),), 'pk_attr': 'id', 'table_description': 'One row per legacy resource that `applyMigration` recreated inside an application, so a second'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LegacyResource',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('project', fields.ForeignKeyField('models.LegacyProject', source_field='project_id', db_constraint=True, to_field='id', related_name='resources', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharField(max_length=24)),
                ('slug', fields.CharField(max_length=200)),
                ('target_id', fields.UUIDField()),
                ('content_sha256', fields.CharField(max_length=64)),
            ],
            options={'table': 'legacy_resource', 'app': 'models', 'unique_together': (('project_id', 'kind', 'slug'),), 'indexes': [Index(fields=['target_id'])], 'pk_attr': 'id', 'table_description': 'What each item of the export became: (kind, slug in the file) -> the row it created. Re-running an'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LegacyRole',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('project', fields.ForeignKeyField('models.LegacyProject', source_field='project_id', db_constraint=True, to_field='id', related_name='roles', on_delete=OnDelete.CASCADE)),
                ('slug', fields.CharField(max_length=100)),
                ('name', fields.CharField(max_length=200)),
                ('permissions', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('conditions', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
            ],
            options={'table': 'legacy_role', 'app': 'models', 'unique_together': (('project_id', 'slug'),), 'pk_attr': 'id', 'table_description': 'A custom legacy role: permissions from the fixed vocabulary of core.legacy_roles, optionally'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LegacyMembership',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('project', fields.ForeignKeyField('models.LegacyProject', source_field='project_id', db_constraint=True, to_field='id', related_name='memberships', on_delete=OnDelete.CASCADE)),
                ('principal', fields.ForeignKeyField('models.Principal', source_field='principal_id', db_constraint=True, to_field='id', related_name='legacy_memberships', on_delete=OnDelete.CASCADE)),
                ('role', fields.CharField(max_length=16)),
                ('custom_role', fields.ForeignKeyField('models.LegacyRole', source_field='custom_role_id', null=True, db_constraint=True, to_field='id', related_name='memberships', on_delete=OnDelete.CASCADE)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'legacy_membership', 'app': 'models', 'unique_together': (('project_id', 'principal_id'),), 'indexes': [Index(fields=['principal_id'])], 'pk_attr': 'id', 'table_description': "A principal's legacy role in a project: admin, member, viewer, or custom (with `custom_role`)."},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Application',
            name='legacy',
            field=fields.BooleanField(default=False),
        ),
        ops.AlterField(
            model_name='ApplicationProfile',
            name='acme_eab_kid',
            field=fields.CharField(null=True, db_index=True, max_length=64),
        ),
        ops.AddField(
            model_name='CertificateProfile',
            name='legacy_project_id',
            field=fields.UUIDField(null=True),
        ),
    ]
