"""The one GraphQL schema: each domain module contributes a Query and a Mutation class."""

from __future__ import annotations

import logging

import strawberry
from graphql import GraphQLError
from strawberry.extensions import AddValidationRules, MaskErrors, ParserCache, ValidationCache
from strawberry.extensions.query_depth_limiter import create_validator
from strawberry.tools import merge_types

from api.graphql import (
    alert,
    application,
    approval,
    audit,
    certificate,
    est,
    identity,
    legacy,
    legacy_import,
    migration,
    pki,
    scep,
    sync,
)
from core.errors import KeywardError

log = logging.getLogger("keyward.graphql")

DEPTH_LIMIT_RULE = create_validator(max_depth=12, should_ignore=None)

DOMAINS = [identity, audit, pki, certificate, application, alert, est, scep, approval, sync]
DOMAINS.append(legacy)  # legacy projects (SPEC §12): certificateManager
DOMAINS.append(migration)  # the migration assistant (SPEC §13): migrationPlan, applyMigration
DOMAINS.append(legacy_import)  # importLegacyProject (SPEC §12)


def _should_mask(error: GraphQLError) -> bool:
    """Hide unexpected exceptions' text (it may hold internals); our errors and GraphQL's own pass.

    Errors outside execution (no path: parsing, validation, variable coercion such as a wrong enum value)
    describe the caller's document, so their text is kept.
    """
    original = error.original_error
    if original is None or isinstance(original, KeywardError) or error.path is None:
        return False
    log.error("unexpected error in %s", error.path, exc_info=original)
    return True


class InternalErrorMask(MaskErrors):
    """Masks unexpected errors: their text may hold internals."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        masked.extensions = {"code": "INTERNAL_SERVER_ERROR"}
        return masked


def build_schema() -> strawberry.Schema:
    query = merge_types("Query", tuple(domain.Query for domain in DOMAINS if hasattr(domain, "Query")))
    mutation = merge_types("Mutation", tuple(d.Mutation for d in DOMAINS if hasattr(d, "Mutation")))
    return strawberry.Schema(
        query=query,
        mutation=mutation,
        extensions=[
            lambda: InternalErrorMask(should_mask_error=_should_mask, error_message="internal server error"),
            # Clients send the same few documents again and again: parse and validate each once (~3 ms each).
            lambda: ParserCache(maxsize=512),
            # The deepest legitimate document (application → certificates → edges → node → renewedFrom → ...)
            # is about 8 levels; deeper ones are refused before they are executed. One rule class for the
            # process: a new class per request (QueryDepthLimiter) would miss the validation cache every time.
            lambda: AddValidationRules([DEPTH_LIMIT_RULE]),
            lambda: ValidationCache(maxsize=512),
        ],
    )


schema = build_schema()
