"""First start: an organization and its first Product Admin."""

from __future__ import annotations

from tortoise.transactions import in_transaction

from core import audit, authn
from core.authz import Actor
from core.errors import Conflict, InvalidInput
from models import Organization, Principal, ProductMembership
from models.enums import PrincipalKind, ProductRole, TokenKind


async def init_organization(
    *, org_name: str, admin_email: str, admin_password: str | None = None
) -> tuple[Organization, Principal, str]:
    """Create the organization and its Product Admin; return a one-time bearer token for them."""
    org_name = org_name.strip()
    email = admin_email.strip().lower()
    if not org_name:
        raise InvalidInput("organization name must not be empty", field="org")
    if "@" not in email:
        raise InvalidInput(f"{admin_email!r} is not an email address", field="admin_email")
    if await Organization.exists(name=org_name):
        raise Conflict(f"organization {org_name!r} already exists")
    if await Principal.exists(email=email):
        raise Conflict(f"a user with email {email!r} already exists")
    password_hash = authn.hash_password(admin_password) if admin_password else None
    async with in_transaction() as conn:
        org = await Organization.create(name=org_name, using_db=conn)
        admin = await Principal.create(
            organization=org,
            kind=PrincipalKind.USER,
            name=email,
            email=email,
            password_hash=password_hash,
            using_db=conn,
        )
        await ProductMembership.create(
            organization=org, principal=admin, role=ProductRole.ADMIN, using_db=conn
        )
        await audit.record(
            actor=Actor.system(org.id, "keyward init"),
            action="organization.init",
            resource_type="organization",
            resource_id=org.id,
            details={"admin_email": email},
            connection=conn,
        )
        plaintext, _ = await authn.create_token(
            principal=admin, kind=TokenKind.API, name="bootstrap", connection=conn
        )
    return org, admin, plaintext
