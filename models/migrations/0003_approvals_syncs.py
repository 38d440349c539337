from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from models.sync import SyncAction, SyncDestination, SyncFormat, SyncTargetStatus
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0002_est_scep')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ApprovalPolicy',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('application', fields.ForeignKeyField('models.Application', source_field='application_id', db_constraint=True, to_field='id', related_name='approval_policies', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=100)),
                ('steps', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('max_request_ttl_seconds', fields.IntField()),
                ('bypass_machine_identities', fields.BooleanField(default=False)),
                ('is_active', fields.BooleanField(default=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'approval_policy', 'app': 'models', 'unique_together': (('application_id', 'name'),), 'pk_attr': 'id', 'table_description': 'Ordered steps of approvers that a request for a covered attached profile must pass before issuance.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ApprovalPolicyAttachment',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('policy', fields.ForeignKeyField('models.ApprovalPolicy', source_field='policy_id', db_constraint=True, to_field='id', related_name='coverage', on_delete=OnDelete.CASCADE)),
                ('attachment', fields.ForeignKeyField('models.ApplicationProfile', source_field='attachment_id', db_constraint=True, to_field='id', related_name='approval_coverage', on_delete=OnDelete.CASCADE)),
            ],
            options={'table': 'approval_policy_attachment', 'app': 'models', 'unique_together': (('policy_id', 'attachment_id'),), 'indexes': [Index(fields=['attachment_id'])], 'pk_attr': 'id', 'table_description': 'One attached profile covered by a policy (looked up by attachment on every issuance).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ApprovalRequest',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('organization_id', fields.UUIDField()),
                ('policy', fields.ForeignKeyField('models.ApprovalPolicy', source_field='policy_id', null=True, db_constraint=True, to_field='id', related_name='requests', on_delete=OnDelete.SET_NULL)),
                ('policy_name', fields.CharField(max_length=100)),
                ('application', fields.ForeignKeyField('models.Application', source_field='application_id', db_constraint=True, to_field='id', related_name='approval_requests', on_delete=OnDelete.CASCADE)),
                ('attachment', fields.ForeignKeyField('models.ApplicationProfile', source_field='attachment_id', db_constraint=True, to_field='id', related_name='approval_requests', on_delete=OnDelete.CASCADE)),
                ('profile_id', fields.UUIDField()),
                ('requester', fields.ForeignKeyField('models.Principal', source_field='requester_id', null=True, db_constraint=True, to_field='id', related_name='approval_requests', on_delete=OnDelete.SET_NULL)),
                ('requester_name', fields.CharField(max_length=200)),
                ('method', fields.CharField(max_length=8)),
                ('csr_pem', fields.TextField(null=True, unique=False)),
                ('request', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('summary', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('steps', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharField(default='pending', max_length=16)),
                ('current_step', fields.IntField(default=0)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('decided_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('failure_reason', fields.TextField(null=True, unique=False)),
                ('certificate', fields.ForeignKeyField('models.Certificate', source_field='certificate_id', null=True, db_constraint=True, to_field='id', related_name='approval_requests', on_delete=OnDelete.SET_NULL)),
                ('correlation', fields.CharField(null=True, max_length=255)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'approval_request', 'app': 'models', 'indexes': [Index(fields=['application_id', 'status', 'expires_at']), Index(fields=['status', 'expires_at']), Index(fields=['organization_id', 'created_at']), Index(fields=['requester_id']), Index(fields=['attachment_id', 'correlation'])], 'pk_attr': 'id', 'table_description': 'A certificate request held back by a policy, with what is needed to issue it once approved.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ApprovalDecision',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('request', fields.ForeignKeyField('models.ApprovalRequest', source_field='request_id', db_constraint=True, to_field='id', related_name='decisions', on_delete=OnDelete.CASCADE)),
                ('step', fields.IntField()),
                ('approver', fields.ForeignKeyField('models.Principal', source_field='approver_id', null=True, db_constraint=True, to_field='id', related_name='approval_decisions', on_delete=OnDelete.SET_NULL)),
                ('approver_name', fields.CharField(max_length=200)),
                ('decision', fields.CharField(max_length=8)),
                ('comment', fields.TextField(default='', unique=False)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'approval_decision', 'app': 'models', 'unique_together': (('request_id', 'step', 'approver_id'),), 'indexes': [Index(fields=['approver_id', 'created_at'])], 'pk_attr': 'id', 'table_description': "One approver's approval or rejection at one step."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Sync',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('application', fields.ForeignKeyField('models.Application', source_field='application_id', db_constraint=True, to_field='id', related_name='syncs', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=100)),
                ('destination', fields.CharEnumField(description='LOCAL: local\nSFTP: sftp\nHTTP: http\nAWS_ACM: aws_acm\nAWS_SECRETS: aws_secrets', enum_type=SyncDestination, max_length=16)),
                ('connection', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('encrypted_credentials', fields.BinaryField(null=True)),
                ('profile_ids', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('certificate_ids', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('metadata_filter', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('auto_sync', fields.BooleanField(default=True)),
                ('remove_on_revoke', fields.BooleanField(default=True)),
                ('remove_on_expiry', fields.BooleanField(default=False)),
                ('include_root', fields.BooleanField(default=False)),
                ('include_private_key', fields.BooleanField(default=True)),
                ('name_template', fields.CharField(default='{{certificateId}}', max_length=255)),
                ('format', fields.CharEnumField(default=SyncFormat.PEM, description='PEM: pem\nPKCS12: pkcs12\nJKS: jks', enum_type=SyncFormat, max_length=8)),
                ('max_concurrency', fields.IntField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'sync', 'app': 'models', 'unique_together': (('application_id', 'name'),), 'indexes': [Index(fields=['application_id', 'auto_sync'])], 'pk_attr': 'id', 'table_description': 'A destination certificates of an application are pushed to, with its filters and options.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SyncTarget',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('sync', fields.ForeignKeyField('models.Sync', source_field='sync_id', db_constraint=True, to_field='id', related_name='targets', on_delete=OnDelete.CASCADE)),
                ('certificate', fields.ForeignKeyField('models.Certificate', source_field='certificate_id', db_constraint=True, to_field='id', related_name='sync_targets', on_delete=OnDelete.CASCADE)),
                ('action', fields.CharEnumField(default=SyncAction.PUSH, description='PUSH: push\nREMOVE: remove', enum_type=SyncAction, max_length=8)),
                ('status', fields.CharEnumField(default=SyncTargetStatus.PENDING, description='PENDING: pending\nRUNNING: running\nSUCCEEDED: succeeded\nFAILED: failed\nREMOVED: removed', enum_type=SyncTargetStatus, max_length=16)),
                ('message', fields.TextField(null=True, unique=False)),
                ('attempts', fields.IntField(default=0)),
                ('next_attempt_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('leased_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_started_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_finished_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_succeeded_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('remote_reference', fields.TextField(null=True, unique=False)),
                ('replaces_target_id', fields.UUIDField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'sync_target', 'app': 'models', 'unique_together': (('sync_id', 'certificate_id'),), 'indexes': [Index(fields=['status', 'next_attempt_at']), Index(fields=['sync_id', 'status']), Index(fields=['certificate_id'])], 'pk_attr': 'id', 'table_description': 'The state of one certificate at one sync destination, retried with backoff until it succeeds.'},
            bases=['Model'],
        ),
    ]
