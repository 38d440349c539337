"""Who am I, the organization, its principals (users, machine identities), logging in, and tokens."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

import strawberry
from strawberry.types import Info

from api.graphql.ids import parse_id
from api.graphql.permission import (
    guard_type,
    guarded_field,
    guarded_mutation,
    public_mutation,
    public_type,
)
from core import authn, identity, runtime
from core.authz import Permission, Scope
from core.errors import InvalidState
from models import ApiToken as ApiTokenModel
from models import Organization as OrganizationModel
from models import Principal as PrincipalModel
from models import ProductMembership, enums


@strawberry.enum(
    name="ProductRole", description="Product-level role: ADMIN runs the shared PKI and everything"
)
class ProductRoleEnum(Enum):
    ADMIN = "admin"
    MEMBER = "member"

    def to_model(self) -> enums.ProductRole:
        return enums.ProductRole(self.value)


@strawberry.enum(name="PrincipalKind")
class PrincipalKindEnum(Enum):
    USER = "user"
    MACHINE = "machine"


@strawberry.enum(name="TokenKind", description="SESSION tokens come from a password login and expire")
class TokenKindEnum(Enum):
    SESSION = "session"
    API = "api"


@guard_type(Permission.PRODUCT_READ)
@strawberry.type
class Organization:
    _model: strawberry.Private[OrganizationModel]
    id: strawberry.ID
    name: str

    def authz_scope(self) -> Scope:
        return Scope(organization_id=self._model.id)

    @classmethod
    def from_model(cls, model: OrganizationModel) -> Organization:
        return cls(_model=model, id=strawberry.ID(str(model.id)), name=model.name)


@guard_type(Permission.PRODUCT_READ)
@strawberry.type(description="A user or a machine identity; both hold roles the same way.")
class Principal:
    _model: strawberry.Private[PrincipalModel]
    id: strawberry.ID
    kind: PrincipalKindEnum
    name: str
    email: str | None
    is_active: bool
    created_at: datetime

    def authz_scope(self) -> Scope:
        return Scope(organization_id=self._model.organization_id)

    @guarded_field(Permission.PRODUCT_MANAGE, description="Product role; visible to Product Admins.")
    async def product_role(self) -> ProductRoleEnum | None:
        membership = getattr(self._model, "product_membership", None)  # prefetched by the lists: row or None
        if not (membership is None or isinstance(membership, ProductMembership)):
            membership = await ProductMembership.get_or_none(principal_id=self._model.id)
        return ProductRoleEnum(enums.ProductRole(membership.role).value) if membership else None

    @classmethod
    def from_model(cls, model: PrincipalModel) -> Principal:
        return cls(
            _model=model,
            id=strawberry.ID(str(model.id)),
            kind=PrincipalKindEnum(enums.PrincipalKind(model.kind).value),
            name=model.name,
            email=model.email,
            is_active=model.is_active,
            created_at=model.created_at,
        )


@guard_type(Permission.SELF)
@strawberry.type(description="A bearer token's metadata; the token itself is shown only when created.")
class ApiToken:
    _model: strawberry.Private[ApiTokenModel]
    id: strawberry.ID
    name: str
    prefix: str
    kind: TokenKindEnum
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_model(cls, model: ApiTokenModel) -> ApiToken:
        return cls(
            _model=model,
            id=strawberry.ID(str(model.id)),
            name=model.name,
            prefix=model.prefix,
            kind=TokenKindEnum(enums.TokenKind(model.kind).value),
            created_at=model.created_at,
            expires_at=model.expires_at,
            revoked_at=model.revoked_at,
            last_used_at=model.last_used_at,
        )


@guard_type(Permission.SELF)
@strawberry.type
class Viewer:
    id: strawberry.ID | None
    kind: str
    name: str
    organization_id: strawberry.ID | None
    product_role: str | None

    @guarded_field(Permission.SELF, description="The caller's own tokens, newest first; never the secret.")
    async def tokens(self, info: Info) -> list[ApiToken]:
        rows = await identity.list_own_tokens(actor=info.context.actor)
        return [ApiToken.from_model(row) for row in rows]


@public_type("the caller's own new session token")
@strawberry.type
class LoginPayload:
    token: str
    expires_at: str


@public_type("the token the caller just created, shown this once")
@strawberry.type
class CreateApiTokenPayload:
    token: str = strawberry.field(description="The bearer token. Stored only as a hash: copy it now.")
    api_token: ApiToken


@strawberry.input
class CreateUserInput:
    email: str
    name: str
    product_role: ProductRoleEnum
    password: str | None = strawberry.field(
        default=None, description="At least 12 characters; without one the user cannot log in."
    )


@strawberry.input
class CreateMachineIdentityInput:
    name: str
    product_role: ProductRoleEnum


@strawberry.input
class CreateApiTokenInput:
    name: str
    principal_id: strawberry.ID | None = strawberry.field(
        default=None, description="Whose token; omitted means the caller's own."
    )
    expires_in_days: int | None = strawberry.field(default=None, description="Omitted: never expires.")


def _bearer_token(info: Info) -> str:
    request = info.context.request
    header = request.headers.get("authorization", "") if request is not None else ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidState("no session token was presented")
    return token.strip()


@strawberry.type
class Query:
    @guarded_field(Permission.SELF, description="The authenticated caller and their product role.")
    def viewer(self, info: Info) -> Viewer:
        actor = info.context.actor
        return Viewer(
            id=strawberry.ID(str(actor.principal_id)) if actor.principal_id else None,
            kind=actor.kind,
            name=actor.name,
            organization_id=strawberry.ID(str(actor.organization_id)) if actor.organization_id else None,
            product_role=actor.product_role.value if actor.product_role else None,
        )

    @guarded_field(Permission.PRODUCT_READ, description="The caller's organization.")
    async def organization(self, info: Info) -> Organization:
        return Organization.from_model(await identity.get_organization(actor=info.context.actor))

    @guarded_field(Permission.PRODUCT_READ, description="Users of the organization, by name.")
    async def users(self, info: Info) -> list[Principal]:
        rows = await identity.list_principals(actor=info.context.actor, kind=enums.PrincipalKind.USER)
        return [Principal.from_model(row) for row in rows]

    @guarded_field(Permission.PRODUCT_READ, description="Machine identities of the organization, by name.")
    async def machine_identities(self, info: Info) -> list[Principal]:
        rows = await identity.list_principals(actor=info.context.actor, kind=enums.PrincipalKind.MACHINE)
        return [Principal.from_model(row) for row in rows]


@strawberry.type
class Mutation:
    @public_mutation("logging in is how a caller gets a token")
    async def login(self, email: str, password: str) -> LoginPayload:
        ttl = timedelta(hours=runtime.settings().session_ttl_hours)
        plaintext, token = await authn.login(email=email, password=password, session_ttl=ttl)
        assert token.expires_at is not None
        return LoginPayload(token=plaintext, expires_at=token.expires_at.isoformat())

    @guarded_mutation(Permission.SELF, description="Revoke the session token this request presents.")
    async def logout(self, info: Info) -> bool:
        await identity.logout(actor=info.context.actor, presented_token=_bearer_token(info))
        return True

    @guarded_mutation(Permission.PRODUCT_MANAGE, description="Create a user with a product role.")
    async def create_user(self, info: Info, input: CreateUserInput) -> Principal:
        principal = await identity.create_user(
            actor=info.context.actor,
            email=input.email,
            name=input.name,
            role=input.product_role.to_model(),
            password=input.password,
        )
        return Principal.from_model(principal)

    @guarded_mutation(Permission.PRODUCT_MANAGE, description="Create a machine identity with a product role.")
    async def create_machine_identity(self, info: Info, input: CreateMachineIdentityInput) -> Principal:
        principal = await identity.create_machine_identity(
            actor=info.context.actor, name=input.name, role=input.product_role.to_model()
        )
        return Principal.from_model(principal)

    @guarded_mutation(
        Permission.PRODUCT_MANAGE,
        description="Change a principal's product role; the last active Product Admin cannot be demoted.",
    )
    async def set_product_role(
        self, info: Info, principal_id: strawberry.ID, role: ProductRoleEnum
    ) -> Principal:
        principal = await identity.set_product_role(
            actor=info.context.actor, principal_id=parse_id(principal_id, "principal"), role=role.to_model()
        )
        return Principal.from_model(principal)

    @guarded_mutation(
        Permission.PRODUCT_MANAGE,
        description="Deactivate a user or machine identity: its tokens stop working.",
    )
    async def deactivate_principal(self, info: Info, id: strawberry.ID) -> Principal:
        principal = await identity.set_principal_active(
            actor=info.context.actor, principal_id=parse_id(id, "principal"), active=False
        )
        return Principal.from_model(principal)

    @guarded_mutation(Permission.PRODUCT_MANAGE, description="Reactivate a deactivated principal.")
    async def reactivate_principal(self, info: Info, id: strawberry.ID) -> Principal:
        principal = await identity.set_principal_active(
            actor=info.context.actor, principal_id=parse_id(id, "principal"), active=True
        )
        return Principal.from_model(principal)

    @guarded_mutation(
        Permission.SELF,
        description="Create an API token: your own, or (Product Admin) any principal's. Shown once.",
    )
    async def create_api_token(self, info: Info, input: CreateApiTokenInput) -> CreateApiTokenPayload:
        principal_id = parse_id(input.principal_id, "principal") if input.principal_id is not None else None
        plaintext, token = await identity.create_api_token(
            actor=info.context.actor,
            principal_id=principal_id,
            name=input.name,
            expires_in_days=input.expires_in_days,
        )
        return CreateApiTokenPayload(token=plaintext, api_token=ApiToken.from_model(token))

    @guarded_mutation(
        Permission.SELF, description="Revoke one of your tokens, or (Product Admin) any token of the org."
    )
    async def revoke_api_token(self, info: Info, id: strawberry.ID) -> ApiToken:
        token = await identity.revoke_api_token(actor=info.context.actor, token_id=parse_id(id, "token"))
        return ApiToken.from_model(token)
