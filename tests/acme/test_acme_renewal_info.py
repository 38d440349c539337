"""ACME Renewal Information (RFC 9773): the directory's renewalInfo windows, over HTTP too, and new orders
that replace a certificate (`replaces`, alreadyReplaced)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from acme_order_support import Scene, acme_csr, make_authorizations_valid, make_scene
from conftest import OrgAdmin
from cryptography import x509
from factories import make_member

from api.app import create_app
from api.routes.acme_order import order_object
from core import acme_order, acme_renewal, acme_sql, approval
from core.acme_account import acme_url, load_acme_attachment
from core.authn import load_actor
from core.authz import Actor
from core.certificate import revoke_certificate
from core.issuance import renewal_point
from models import AcmeOrder, ApprovalRequest, AuditEvent, Certificate, OutboxEvent
from models.enums import ApplicationRole, CertificateStatus
from pki.acme.ari import CertId, cert_id_of
from pki.acme.problem import AcmeProblem


@pytest.fixture
async def scene(org_admin: OrgAdmin) -> Scene:
    return await make_scene(org_admin.organization_id)


def dns(*names: str) -> list[dict[str, str]]:
    return [{"type": "dns", "value": name} for name in names]


async def issued(scene: Scene, *names: str, replacing: Certificate | None = None) -> Certificate:
    payload: dict[str, Any] = {"identifiers": dns(*names)}
    if replacing is not None:
        payload["replaces"] = cert_id(replacing)
    view = await acme_order.new_order(attachment=scene.attachment, account=scene.account, payload=payload)
    await make_authorizations_valid(view.order.authorization_ids)
    view = await acme_order.finalize_order(
        attachment=scene.attachment,
        account=scene.account,
        order_id=str(view.order.id),
        payload={"csr": acme_csr(list(names))},
    )
    assert view.status == "valid"
    return await Certificate.get(id=view.order.certificate_id)


def cert_id(certificate: Certificate) -> str:
    found = cert_id_of(x509.load_pem_x509_certificate(certificate.certificate_pem.encode()))
    assert found is not None
    return str(found)


def _time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


# ---------------------------------------------------------------- renewal windows


async def test_a_fresh_certificate_is_due_at_its_renewal_point(scene: Scene) -> None:
    certificate = await issued(scene, "ari.example.com")
    info = await acme_renewal.renewal_info(scene.attachment, cert_id(certificate))
    start, end = _time(info["suggestedWindow"]["start"]), _time(info["suggestedWindow"]["end"])
    due = renewal_point(
        not_before=certificate.not_before,
        not_after=certificate.not_after,
        renew_before_days=certificate.renew_before_days,
    )
    assert end == due.replace(microsecond=0)
    assert datetime.now(UTC) < start < end <= certificate.not_after


async def test_a_revoked_certificate_is_to_be_replaced_at_once(scene: Scene) -> None:
    certificate = await issued(scene, "ari.example.com")
    await revoke_certificate(
        actor=Actor.system(scene.org.id, "tests"), certificate_id=certificate.id, reason="keyCompromise"
    )
    info = await acme_renewal.renewal_info(scene.attachment, cert_id(certificate))
    start, end = _time(info["suggestedWindow"]["start"]), _time(info["suggestedWindow"]["end"])
    assert start < end < datetime.now(UTC)


async def test_unknown_and_foreign_certificates_are_not_found(org_admin: OrgAdmin, scene: Scene) -> None:
    certificate = await issued(scene, "ari.example.com")
    known = cert_id_of(x509.load_pem_x509_certificate(certificate.certificate_pem.encode()))
    assert known is not None
    unknown = str(CertId(known.key_identifier, known.serial + 1))
    another_issuer = str(CertId(b"\x01" * 20, known.serial))
    elsewhere = await make_scene(org_admin.organization_id)  # another application, profile and CA
    for attachment, text in [
        (scene.attachment, unknown),
        (scene.attachment, another_issuer),
        (elsewhere.attachment, cert_id(certificate)),
    ]:
        with pytest.raises(AcmeProblem) as caught:
            await acme_renewal.renewal_info(attachment, text)
        assert (caught.value.kind, caught.value.status) == ("malformed", 404)


async def test_renewal_info_over_http(scene: Scene) -> None:
    certificate = await issued(scene, "ari.example.com")
    app = create_app(manage_db=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        directory = (await client.get(acme_url(scene.attachment, "directory"))).json()
        assert directory["renewalInfo"] == acme_url(scene.attachment, "renewal-info")
        answer = await client.get(f"{directory['renewalInfo']}/{cert_id(certificate)}")
        assert answer.status_code == 200, answer.text
        assert answer.headers["Retry-After"] == str(6 * 60 * 60)
        assert answer.headers["Content-Type"].startswith("application/json")
        assert set(answer.json()["suggestedWindow"]) == {"start", "end"}
        malformed = await client.get(f"{directory['renewalInfo']}/not-an-identifier")
        assert malformed.status_code == 400
        assert malformed.json()["type"] == "urn:ietf:params:acme:error:malformed"


# ---------------------------------------------------------------- orders replacing a certificate


async def test_an_order_replacing_a_certificate_says_so_and_only_one_may(scene: Scene) -> None:
    certificate = await issued(scene, "ari.example.com")
    payload = {"identifiers": dns("ari.example.com", "www.ari.example.com"), "replaces": cert_id(certificate)}
    view = await acme_order.new_order(attachment=scene.attachment, account=scene.account, payload=payload)
    assert view.order.replaces == cert_id(certificate)
    assert view.order.replaces_certificate_id == certificate.id
    stored = await AcmeOrder.get(id=view.order.id)
    assert stored.replaces == cert_id(certificate)
    assert order_object(scene.attachment, view)["replaces"] == cert_id(certificate)

    with pytest.raises(AcmeProblem) as caught:
        await acme_order.new_order(attachment=scene.attachment, account=scene.account, payload=payload)
    assert (caught.value.kind, caught.value.status) == ("alreadyReplaced", 409)

    # Once that order is invalid (or expired), another may replace the certificate.
    await AcmeOrder.filter(id=view.order.id).update(status="invalid")
    again = await acme_order.new_order(attachment=scene.attachment, account=scene.account, payload=payload)
    assert again.order.replaces_certificate_id == certificate.id
    await AcmeOrder.filter(id=again.order.id).update(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    await acme_order.new_order(attachment=scene.attachment, account=scene.account, payload=payload)


async def test_of_two_orders_racing_to_replace_a_certificate_one_is_refused(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both get past their other checks before either is stored, and the first holds its transaction open
    a while after storing: the check in the storing transaction, behind a lock on the certificate, refuses
    the second."""
    certificate = await issued(scene, "race.example.com")
    payload = {"identifiers": dns("race.example.com"), "replaces": cert_id(certificate)}
    looked = asyncio.Event()
    lookers = 0
    reusable = acme_sql.reusable_authorizations

    async def after_both_looked(*args: Any) -> Any:
        nonlocal lookers
        lookers += 1
        if lookers == 2:
            looked.set()
        await asyncio.wait_for(looked.wait(), 10)
        return await reusable(*args)

    run_steps = acme_sql.run_steps
    stored_first = False

    async def first_store_lingers(steps: list[acme_sql.Step], **options: Any) -> list[Any]:
        nonlocal stored_first
        results = await run_steps(steps, **options)
        if not stored_first and any(text.startswith("INSERT") for _, text, _ in steps):
            stored_first = True
            await asyncio.sleep(0.3)  # stored, not yet committed: the other order looks now
        return results

    monkeypatch.setattr(acme_sql, "reusable_authorizations", after_both_looked)
    monkeypatch.setattr(acme_sql, "run_steps", first_store_lingers)
    outcomes = await asyncio.gather(
        *(
            acme_order.new_order(attachment=scene.attachment, account=scene.account, payload=payload)
            for _ in range(2)
        ),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, AcmeProblem)]
    assert [p.kind for p in refused] == ["alreadyReplaced"], outcomes
    assert await AcmeOrder.filter(replaces_certificate_id=certificate.id).count() == 1


async def test_replaces_is_checked_against_the_account_and_the_names(scene: Scene) -> None:
    certificate = await issued(scene, "ari.example.com")
    before = await AcmeOrder.all().count()
    cases = [
        (scene.other, dns("ari.example.com"), cert_id(certificate), ("unauthorized", 403)),
        (scene.account, dns("other.example.com"), cert_id(certificate), ("malformed", 400)),
        (scene.account, dns("ari.example.com"), "not-an-identifier", ("malformed", 400)),
        (scene.account, dns("ari.example.com"), 42, ("malformed", 400)),
    ]
    for account, identifiers, replaces, expected in cases:
        with pytest.raises(AcmeProblem) as caught:
            await acme_order.new_order(
                attachment=scene.attachment,
                account=account,
                payload={"identifiers": identifiers, "replaces": replaces},
            )
        assert (caught.value.kind, caught.value.status) == expected, replaces
    assert await AcmeOrder.all().count() == before, "a refused order leaves no row"
    plain = await acme_order.new_order(
        attachment=scene.attachment, account=scene.account, payload={"identifiers": dns("ari.example.com")}
    )
    assert plain.order.replaces is None
    assert "replaces" not in order_object(scene.attachment, plain)


async def test_the_replacing_certificate_renews_the_one_it_replaces(scene: Scene) -> None:
    old = await issued(scene, "ari.example.com")
    new = await issued(scene, "ari.example.com", "www.ari.example.com", replacing=old)
    assert new.renewed_from_id == old.id
    await old.refresh_from_db()
    # Renewed: the worker neither renews it again nor alerts on its expiry; syncs swap the new one in.
    assert (old.status, old.renewal_due_at, old.next_renewal_attempt_at) == (
        CertificateStatus.RENEWED,
        None,
        None,
    )
    audit = await AuditEvent.get(resource_id=str(new.id))
    assert (audit.action, audit.details["renewed_from"], audit.details["mode"]) == (
        "certificate.renew",
        str(old.id),
        "replaces",
    )
    event = await OutboxEvent.get(certificate_id=new.id)
    assert event.event_type == "certificate.renewed"
    assert event.payload["renewed_from_id"] == str(old.id)


async def test_a_revoked_certificate_replaced_stays_revoked(scene: Scene) -> None:
    old = await issued(scene, "ari.example.com")
    await revoke_certificate(
        actor=Actor.system(scene.org.id, "tests"), certificate_id=old.id, reason="keyCompromise"
    )
    new = await issued(scene, "ari.example.com", replacing=old)
    assert new.renewed_from_id == old.id
    await old.refresh_from_db()
    assert old.status == CertificateStatus.REVOKED


async def test_a_replacing_order_held_for_approval_renews_once_approved(scene: Scene) -> None:
    old = await issued(scene, "ari.example.com")
    approver = await make_member(scene.org, applications={scene.application: ApplicationRole.OPERATOR})
    await approval.create_policy(
        actor=Actor.system(scene.org.id),
        application_id=scene.application.id,
        name="gate",
        profile_ids=[scene.attachment.profile_id],
        steps=[approval.StepSpec(approver_ids=[approver.principal.id], required=1)],
        max_request_ttl=approval.MIN_TTL,
    )
    payload = {"identifiers": dns("ari.example.com"), "replaces": cert_id(old)}
    view = await acme_order.new_order(attachment=scene.attachment, account=scene.account, payload=payload)
    await make_authorizations_valid(view.order.authorization_ids)
    # Read anew, as every request does: the join says a policy now covers it.
    attachment = await load_acme_attachment(str(scene.application.id), str(scene.attachment.profile_id))
    view = await acme_order.finalize_order(
        attachment=attachment,
        account=scene.account,
        order_id=str(view.order.id),
        payload={"csr": acme_csr(["ari.example.com"])},
    )
    assert view.status == "processing"
    request = await ApprovalRequest.get(correlation=str(view.order.id))
    decided = await approval.approve(actor=await load_actor(approver.principal), request_id=request.id)
    assert decided.certificate_id is not None
    new = await Certificate.get(id=decided.certificate_id)
    assert new.renewed_from_id == old.id
    await old.refresh_from_db()
    assert old.status == CertificateStatus.RENEWED
