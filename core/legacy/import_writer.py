"""The writes of a legacy import (core/legacy/importer.py checked the export first): one transaction, in
file order of dependency, through the services an application's resources go through, as the system actor;
a LegacyResource row per item. A service's refusal rolls the whole import back as an InvalidImport at the
item's JSON path."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from core import alert as alert_service
from core import application as application_service
from core import approval as approval_service
from core import audit, runtime
from core import ca as ca_service
from core import est as est_service
from core import identity as identity_service
from core import policy as policy_service
from core import profile as profile_service
from core import scep as scep_service
from core import sync as sync_service
from core.authz import Actor
from core.errors import InvalidImport, KeywardError
from core.issuance import chain_pem_of, fact_columns, renewal_due_at, seal_private_key
from core.legacy.import_checks import (
    ALERT_RENAMES,
    APPROVAL_RENAMES,
    SYNC_RENAMES,
    approver_members,
    ca_creation_order,
    channel_specs,
    find_approver,
)
from core.legacy.import_document import (
    KINDS,
    CaItem,
    CertificateItem,
    ImportReport,
    MemberItem,
    ParsedExport,
    Problems,
    ProfileItem,
    Progress,
    container_name,
    item_key,
    json_path,
    sha256_of,
)
from models import (
    Application,
    ApplicationProfile,
    Certificate,
    CertificateAuthority,
    CertificateProfile,
    LegacyMembership,
    LegacyProject,
    LegacyResource,
    LegacyRole,
    Principal,
    ProductMembership,
)
from models.enums import CaKind, CaStatus, CertificateSource, CertificateStatus, EnrollmentMethod, ProductRole
from pki import sealing
from pki.certificate import certificate_pem
from pki.duration import parse_duration

CERTIFICATE_BATCH = 500
SYSTEM_ACTOR_NAME = "legacy-import"


class Writer:
    def __init__(
        self,
        parsed: ParsedExport,
        actor: Actor,
        organization_id: uuid.UUID,
        source_sha256: str,
        progress: Progress | None,
    ) -> None:
        self.parsed = parsed
        self.actor = actor
        self.system = Actor.system(organization_id, SYSTEM_ACTOR_NAME)
        self.organization_id = organization_id
        self.source_sha256 = source_sha256
        self.progress = progress
        self.project_id = uuid.uuid4()
        self.created: Counter[str] = Counter()
        self.resources: list[LegacyResource] = []
        self.done = 0
        self.total = parsed.total_items
        self.roles: dict[str, uuid.UUID] = {}
        self.principals: dict[str, uuid.UUID] = {}
        self.cas: dict[str, CertificateAuthority] = {}
        self.policies: dict[str, uuid.UUID] = {}
        self.profiles: dict[str, CertificateProfile] = {}
        self.attachments: dict[str, ApplicationProfile] = {}
        self.certificates: dict[str, uuid.UUID] = {}

    def _advance(self, count: int = 1) -> None:
        self.done += count
        if self.progress is not None:
            self.progress(self.done, self.total)

    def _resource(self, section: str, item: dict[str, Any], target_id: uuid.UUID) -> None:
        kind, _ = KINDS[section]
        key = item_key(section, item)
        assert key is not None
        self.resources.append(
            LegacyResource(
                id=uuid.uuid4(),
                project_id=self.project_id,
                kind=kind,
                slug=key,
                target_id=target_id,
                content_sha256=sha256_of(item),
            )
        )

    async def _service(self, path: str, call: Any, renames: dict[str, str] | None = None) -> Any:
        """A service call for one item; its refusal becomes an InvalidImport at the item's path (and the
        transaction rolls back)."""
        try:
            return await call
        except KeywardError as error:
            problems = Problems()
            problems.error(path, error, renames)
            raise InvalidImport(
                f"{path}: {error.message}; nothing was imported", problems=problems.items
            ) from None

    async def run(self, conn: BaseDBAsyncClient) -> ImportReport:
        parsed = self.parsed
        if self.progress is not None:
            self.progress(0, self.total)
        await Application.create(
            id=self.project_id,
            organization_id=self.organization_id,
            name=container_name(parsed.project_slug),
            description=parsed.project_name,
            legacy=True,
            using_db=conn,
        )
        await LegacyProject.create(
            id=self.project_id,
            organization_id=self.organization_id,
            application_id=self.project_id,
            slug=parsed.project_slug,
            name=parsed.project_name,
            description=parsed.project_description,
            format_version=str(parsed.document["formatVersion"]),
            source_sha256=self.source_sha256,
            using_db=conn,
        )
        self.created["project"] = 1
        await self._roles(conn)
        await self._members(conn)
        await self._cas(conn)
        await self._policies()
        await self._profiles(conn)
        await self._certificates(conn)
        await self._alerts()
        await self._syncs()
        await self._approval_policies()
        await LegacyResource.bulk_create(self.resources, batch_size=CERTIFICATE_BATCH, using_db=conn)
        created = {kind: count for kind, count in self.created.items() if count}
        await audit.record(
            actor=self.actor,
            action="legacy_project.import",
            resource_type="legacy_project",
            resource_id=self.project_id,
            application_id=self.project_id,
            details={
                "slug": parsed.project_slug,
                "format_version": parsed.document["formatVersion"],
                "source_sha256": self.source_sha256,
                "created": created,
            },
            connection=conn,
        )
        return ImportReport(
            project_id=self.project_id, project_slug=parsed.project_slug, created=created, existing={}
        )

    # -------------------------------------------------------------- members

    async def _roles(self, conn: BaseDBAsyncClient) -> None:
        for _, item in self.parsed.roles:
            role = await LegacyRole.create(
                project_id=self.project_id,
                slug=item["slug"],
                name=item["name"].strip(),
                permissions=sorted(item["permissions"]),
                conditions=item.get("conditions") or {},
                using_db=conn,
            )
            self.roles[item["slug"]] = role.id
            self._resource("roles", item, role.id)
            self.created["role"] += 1
            self._advance()

    async def _principal(self, member: MemberItem) -> Principal:
        if member.principal is not None:
            principal = member.principal
            if not await ProductMembership.exists(principal_id=principal.id):
                await self._service(
                    member.path,
                    identity_service.set_product_role(
                        actor=self.system, principal_id=principal.id, role=ProductRole.MEMBER
                    ),
                )
            return principal
        self.created["principal"] += 1
        if member.kind == "user":
            assert member.email is not None
            return await self._service(  # type: ignore[no-any-return]
                member.path,
                identity_service.create_user(
                    actor=self.system, email=member.email, name=member.name, role=ProductRole.MEMBER
                ),
            )
        return await self._service(  # type: ignore[no-any-return]
            member.path,
            identity_service.create_machine_identity(
                actor=self.system, name=member.name, role=ProductRole.MEMBER
            ),
        )

    async def _members(self, conn: BaseDBAsyncClient) -> None:
        for member in self.parsed.members:
            principal = await self._principal(member)
            membership = await LegacyMembership.create(
                project_id=self.project_id,
                principal_id=principal.id,
                role=member.role,
                custom_role_id=self.roles.get(member.custom_role) if member.custom_role else None,
                using_db=conn,
            )
            self.principals[member.key] = principal.id
            self._resource("members", member.data, membership.id)
            self.created["member"] += 1
            self._advance()

    # -------------------------------------------------------------- PKI

    async def _cas(self, conn: BaseDBAsyncClient) -> None:
        for ca in self.parsed.cas.values():
            if ca.existing is not None:
                self.cas[ca.slug] = ca.existing
                self._resource("certificateAuthorities", ca.data, ca.existing.id)
                self.created["ca_reference"] += 1
                self._advance()
        for ca in ca_creation_order(self.parsed):
            row = await self._create_ca(ca, conn)
            self.cas[ca.slug] = row
            self._resource("certificateAuthorities", ca.data, row.id)
            self.created["ca"] += 1
            self._advance()

    async def _create_ca(self, ca: CaItem, conn: BaseDBAsyncClient) -> CertificateAuthority:
        """The CA row as core.ca keeps one: key sealed under the KEK, facts of its certificate, active."""
        assert ca.certificate is not None and ca.key is not None and ca.key_algorithm is not None
        ca_id = uuid.uuid4()
        parent = self.cas.get(ca.parent_slug) if ca.parent_slug else None
        root = ca.parent_slug is None and not ca.chain
        external = not root and parent is None
        row = await CertificateAuthority.create(
            id=ca_id,
            organization_id=self.organization_id,
            name=ca.name,
            kind=CaKind.ROOT if root else CaKind.INTERMEDIATE,
            parent_id=parent.id if parent is not None else None,
            external_parent=external,
            chain_pem="".join(certificate_pem(c) for c in ca.chain) if external else None,
            status=CaStatus.ACTIVE,
            key_algorithm=ca.key_algorithm.value,
            encrypted_private_key=ca_service._seal_key(ca_id, ca.key),
            **ca_service._facts_fields(ca.certificate),
            using_db=conn,
        )
        await audit.record(
            actor=self.system,
            action="ca.import",
            resource_type="certificate_authority",
            resource_id=row.id,
            details={
                "name": row.name,
                "subject": row.subject_dn,
                "key_algorithm": row.key_algorithm,
                "legacy_project": self.parsed.project_slug,
            },
            connection=conn,
        )
        return row

    async def _policies(self) -> None:
        for policy in self.parsed.policies.values():
            row = await self._service(
                policy.path,
                policy_service.create_policy(
                    actor=self.system,
                    name=policy.name,
                    description=str(policy.data.get("description") or policy.data.get("name") or ""),
                    rules=policy.rules,
                ),
            )
            self.policies[policy.slug] = row.id
            self._resource("policies", policy.data, row.id)
            self.created["policy"] += 1
            self._advance()

    async def _profiles(self, conn: BaseDBAsyncClient) -> None:
        for profile in self.parsed.profiles.values():
            row = await self._create_profile(profile, conn)
            attachment = await self._attach(profile, row, conn)
            self.profiles[profile.slug] = row
            self.attachments[profile.slug] = attachment
            self._resource("profiles", profile.data, row.id)
            self.created["profile"] += 1
            self._advance()

    async def _create_profile(self, profile: ProfileItem, conn: BaseDBAsyncClient) -> CertificateProfile:
        item = profile.data
        defaults = profile_service.ProfileDefaults(
            validity=item.get("defaultValidity", "90d"),
            key_algorithm=item.get("defaultKeyAlgorithm", "EC_P256"),
            key_usages=tuple(item.get("defaultKeyUsages") or ()),
            extended_key_usages=tuple(item.get("defaultExtendedKeyUsages") or ()),
            subject=tuple((s["type"], s["value"]) for s in item.get("defaultSubject") or ()),
            renew_before_days=item.get("renewBeforeDays", 30),
        )
        row: CertificateProfile = await self._service(
            profile.path,
            profile_service.create_profile(
                actor=self.system,
                name=profile.name,
                ca_id=self.cas[item["ca"]].id,
                policy_id=self.policies[item["policy"]],
                defaults=defaults,
                description=str(item.get("description") or item.get("name") or ""),
            ),
            {"caId": "ca", "policyId": "policy"},
        )
        row.legacy_project_id = self.project_id
        await row.save(using_db=conn, update_fields=["legacy_project_id", "updated_at"])
        return row

    async def _attach(
        self, profile: ProfileItem, row: CertificateProfile, conn: BaseDBAsyncClient
    ) -> ApplicationProfile:
        """Attached to the container with exactly its one enrollment method on, with the file's settings."""
        path = f"{profile.path}.enrollment"
        method = profile.method
        api = profile.settings.get("api") or application_service.ApiEnrollmentSettings()
        attachment: ApplicationProfile = await self._service(
            f"{path}.api",
            application_service.attach_profile(
                actor=self.system,
                application_id=self.project_id,
                profile_id=row.id,
                api=application_service.ApiEnrollmentSettings(
                    enabled=method == EnrollmentMethod.API,
                    auto_renew=api.auto_renew if method == EnrollmentMethod.API else False,
                    renew_before_days=api.renew_before_days if method == EnrollmentMethod.API else None,
                ),
            ),
        )
        keys = {"application_id": self.project_id, "profile_id": row.id}
        if method == EnrollmentMethod.ACME:
            # The legacy key id and HMAC key, sealed as core.application seals its own; enable_acme keeps
            # them.
            assert profile.eab_key is not None
            attachment.acme_eab_kid = profile.settings["kid"]
            attachment.acme_eab_hmac_encrypted = sealing.seal(
                kek=runtime.kek(),
                plaintext=profile.eab_key,
                context=application_service._eab_context(attachment),
            )
            await attachment.save(using_db=conn, update_fields=["acme_eab_kid", "acme_eab_hmac_encrypted"])
            attachment = await self._service(
                f"{path}.acme",
                application_service.enable_acme(
                    actor=self.system, **keys, eab_required=bool(profile.settings["required"])
                ),
            )
        elif method == EnrollmentMethod.EST:
            est = profile.settings
            if est.get("passphraseHash"):
                # An argon2 hash from the legacy system, taken as is: EST verifies it like its own.
                attachment.est_passphrase_hash = est["passphraseHash"]
                await attachment.save(using_db=conn, update_fields=["est_passphrase_hash"])
            attachment = await self._service(
                f"{path}.est",
                est_service.enable_est(
                    actor=self.system,
                    **keys,
                    username=est.get("username"),
                    passphrase=est.get("passphrase"),
                    client_ca_pem=est.get("clientCaPem"),
                ),
            )
        elif method == EnrollmentMethod.SCEP:
            settings: scep_service.ScepSettings = profile.settings["scep"]
            if profile.settings.get("hash"):
                attachment.scep_static_challenge_hash = profile.settings["hash"]
                await attachment.save(using_db=conn, update_fields=["scep_static_challenge_hash"])
            attachment = await self._service(
                f"{path}.scep",
                scep_service.enable_scep(
                    actor=self.system,
                    **keys,
                    challenge_mode=settings.challenge_mode,
                    static_challenge=profile.settings.get("challenge"),
                    challenge_ttl_seconds=settings.challenge_ttl_seconds,
                    max_pending_challenges=settings.max_pending_challenges,
                    include_ca=settings.include_ca,
                    allow_renewal=settings.allow_renewal,
                ),
                {"staticChallenge": "challenge"},
            )
        return attachment

    # -------------------------------------------------------------- certificates

    async def _certificates(self, conn: BaseDBAsyncClient) -> None:
        chains: dict[uuid.UUID, str] = {}
        revoked_cas: set[uuid.UUID] = set()
        batch: list[Certificate] = []
        for item in self.parsed.certificates:
            profile = self.profiles[item.profile_slug]
            ca = self.cas[self.parsed.profiles[item.profile_slug].data["ca"]]
            if ca.id not in chains:
                chains[ca.id] = chain_pem_of(await ca_service.signing_material(ca, connection=conn))
            batch.append(self._certificate_row(item, profile, ca, chains[ca.id]))
            if item.status == CertificateStatus.REVOKED:
                revoked_cas.add(ca.id)
            if len(batch) >= CERTIFICATE_BATCH:
                await self._flush(batch, conn)
                batch = []
        await self._flush(batch, conn)
        # CRLs (and so OCSP's source rows) include the imported revocations at once.
        created_cas = {ca.id for slug, ca in self.cas.items() if self.parsed.cas[slug].existing is None}
        for ca_id in sorted(created_cas | revoked_cas, key=str):
            await ca_service.rebuild_crl(ca_id=ca_id, connection=conn)

    def _certificate_row(
        self, item: CertificateItem, profile: CertificateProfile, ca: CertificateAuthority, chain_pem: str
    ) -> Certificate:
        attachment = self.attachments[item.profile_slug]
        method = self.parsed.profiles[item.profile_slug].method
        certificate_id = uuid.uuid4()
        renew_before = attachment.api_renew_before_days or profile.renew_before_days
        facts = item.facts
        self.certificates[item.slug] = certificate_id
        self._resource("certificates", item.data, certificate_id)
        return Certificate(
            id=certificate_id,
            organization_id=self.organization_id,
            application_id=self.project_id,
            legacy_project_id=self.project_id,
            profile_id=profile.id,
            ca_id=ca.id,
            **fact_columns(facts),
            status=item.status,
            source=CertificateSource.IMPORTED,
            # The method of its legacy profile: the worker renews it through that same enabled method.
            enrollment_method=method,
            auto_renew=item.auto_renew,
            renew_before_days=renew_before,
            renewal_due_at=renewal_due_at(
                not_before=facts.not_before,
                not_after=facts.not_after,
                renew_before_days=renew_before,
                auto_renew=item.auto_renew,
                server_key=item.key is not None,
            )
            if item.status == CertificateStatus.ACTIVE
            else None,
            revoked_at=item.revoked_at,
            revocation_reason=item.revocation_reason,
            certificate_pem=certificate_pem(item.certificate),
            chain_pem=chain_pem,
            encrypted_private_key=seal_private_key(certificate_id, item.key)
            if item.key is not None
            else None,
            fingerprint_sha256=facts.fingerprint_sha256,
            metadata=item.metadata,
        )

    async def _flush(self, batch: list[Certificate], conn: BaseDBAsyncClient) -> None:
        if not batch:
            return
        await Certificate.bulk_create(batch, using_db=conn)
        self.created["certificate"] += len(batch)
        self._advance(len(batch))

    # -------------------------------------------------------------- alerts, syncs, approval policies

    def _profile_ids(self, slugs: list[str]) -> list[uuid.UUID]:
        return [self.profiles[slug].id for slug in slugs]

    async def _alerts(self) -> None:
        for index, item in self.parsed.alerts:
            row = await self._service(
                json_path("alerts", index),
                alert_service.create_alert(
                    actor=self.system,
                    application_id=self.project_id,
                    name=item["name"],
                    event_types=item["eventTypes"],
                    channels=channel_specs(item),
                    thresholds=item.get("thresholds") or [],
                    daily_repeat=bool(item.get("dailyRepeat", False)),
                    profile_ids=self._profile_ids(item.get("profiles") or []),
                    name_pattern=item.get("namePattern"),
                    is_active=bool(item.get("isActive", True)),
                ),
                ALERT_RENAMES,
            )
            self._resource("alerts", item, row.id)
            self.created["alert"] += 1
            self._advance()

    async def _syncs(self) -> None:
        for index, item in self.parsed.syncs:
            optional = {
                key: item[name]
                for name, key in (
                    ("autoSync", "auto_sync"),
                    ("removeOnRevoke", "remove_on_revoke"),
                    ("removeOnExpiry", "remove_on_expiry"),
                    ("includeRoot", "include_root"),
                    ("includePrivateKey", "include_private_key"),
                    ("nameTemplate", "name_template"),
                    ("format", "format"),
                    ("maxConcurrency", "max_concurrency"),
                )
                if name in item
            }
            row = await self._service(
                json_path("syncs", index),
                sync_service.create_sync(
                    actor=self.system,
                    application_id=self.project_id,
                    name=item["name"],
                    destination=item["destination"],
                    connection=dict(item["connection"]),
                    credentials=item.get("credentials"),
                    profile_ids=self._profile_ids(item.get("profiles") or []),
                    certificate_ids=[self.certificates[slug] for slug in item.get("certificates") or []],
                    metadata=item.get("metadata"),
                    **optional,
                ),
                SYNC_RENAMES,
            )
            self._resource("syncs", item, row.id)
            self.created["sync"] += 1
            self._advance()

    async def _approval_policies(self) -> None:
        members = approver_members(self.parsed)
        for index, item in self.parsed.approval_policies:
            steps = []
            for step in item["steps"]:
                approvers = []
                for text in step["approvers"]:
                    member = find_approver(members, text)
                    assert member is not None  # checked before any write
                    approvers.append(self.principals[member.key])
                steps.append(
                    approval_service.StepSpec(
                        approver_ids=list(dict.fromkeys(approvers)), required=step.get("requiredApprovals", 1)
                    )
                )
            renames = {
                **APPROVAL_RENAMES,
                **{f"steps[{i}].approverIds": f"steps[{i}].approvers" for i in range(len(steps))},
                **{f"steps[{i}].required": f"steps[{i}].requiredApprovals" for i in range(len(steps))},
            }
            row = await self._service(
                json_path("approvalPolicies", index),
                approval_service.create_policy(
                    actor=self.system,
                    application_id=self.project_id,
                    name=item["name"],
                    profile_ids=self._profile_ids(item["profiles"]),
                    steps=steps,
                    max_request_ttl=parse_duration(item.get("maxRequestTtl", "7d")),
                    bypass_machine_identities=bool(item.get("bypassForMachines", False)),
                    is_active=bool(item.get("active", True)),
                ),
                renames,
            )
            self._resource("approvalPolicies", item, row.id)
            self.created["approval_policy"] += 1
            self._advance()
