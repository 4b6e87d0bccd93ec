# DRF and drf-spectacular ship no type hints: their base classes are Any to mypy.
# mypy: disallow-subclassing-any=False
"""The provisioning API's views: thin, sync DRF views over api.selectors and api.services.

Every operation is annotated for the OpenAPI schema (request, responses, errors, headers),
and tests/test_api_schemathesis.py holds the live server to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import QuerySet
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import generics
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import ParseError
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission, IsAdminUser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.views import APIView

import api.schema  # noqa: F401  (registers the credentials' OpenAPI description)
from api import selectors, services
from api.authentication import PlatformAuthentication, Principal
from api.errors import ApiError
from api.serializers import (
    ErrorSerializer,
    IssuedTokenSerializer,
    RecordFilterSerializer,
    RouteFilterSerializer,
    RouteSerializer,
    TenantCreateSerializer,
    TenantFilterSerializer,
    TenantModelsSerializer,
    TenantSerializer,
    TenantUpdateSerializer,
    TenantWeekSerializer,
    TierChangeSerializer,
    TierSerializer,
    TokenIssueSerializer,
    UsageRecordSerializer,
    WeekQuerySerializer,
    WeekResetSerializer,
)
from tenants.models import Tenant
from usage.models import UsageRecord

_MESSAGES = {
    400: "The request is not valid (code invalid_request, detail: the fields).",
    401: "No credential, or an invalid, expired, revoked or tenant one.",
    403: "The credential may only read.",
    404: "No such object (or page).",
    409: "The tenant's state forbids it (tenant_exists, tenant_deactivated, "
    "idempotency_request_in_progress).",
    415: "The body is not JSON (Content-Type: application/json).",
    422: "The Idempotency-Key was used for another request (idempotency_key_reused).",
    503: "Tokens cannot be signed here (signing_unavailable).",
}


def _errors(*statuses: int) -> dict[int, OpenApiResponse]:
    return {
        status: OpenApiResponse(ErrorSerializer, description=_MESSAGES[status])
        for status in (401, 403, *statuses)
    }


IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    OpenApiParameter.HEADER,
    required=False,
    description="Retries with the same key and body get the first answer again, without a "
    "second effect, for 24 hours; the same key with another body gets 422.",
)
TENANT_SLUG = OpenApiParameter(
    "slug",
    {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"},
    OpenApiParameter.PATH,
    description="The tenant's slug.",
    examples=[OpenApiExample("A tenant", value="acme")],
)
REPLAYED = OpenApiParameter(
    "Idempotent-Replayed",
    {"type": "string", "enum": ["true"]},
    OpenApiParameter.HEADER,
    required=False,
    response=[201],
    description="true: this is the stored answer to an earlier request with this key.",
)


class TenantPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class RecordPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 500


class StrictJSONParser(JSONParser):
    """JSON whose strings are all text: ``"\\ud800"`` parses to a lone surrogate, which no
    database column can hold (PostgreSQL would fail the request with a 500)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        try:
            json.dumps(data, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ParseError("JSON parse error - a string holds a lone surrogate.") from None
        return data


class PlatformView(APIView):
    # JSON in and out (no form parsers, no browsable API); platform credentials and scopes
    # from the settings' DRF defaults.

    parser_classes = [StrictJSONParser]
    renderer_classes = [JSONRenderer]

    @property
    def principal(self) -> Principal:
        return cast(Principal, self.request.user)


def _valid(serializer: BaseSerializer[Any]) -> dict[str, Any]:
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _query(request: Request, serializer_class: type[BaseSerializer[Any]]) -> dict[str, Any]:
    return _valid(serializer_class(data=request.query_params))


def _idempotent(
    view: PlatformView, request: Request, perform: Callable[[], services.Outcome]
) -> Response:
    result = services.idempotent(
        credential=view.principal.credential_id,
        key=request.headers.get("Idempotency-Key"),
        fingerprint=services.request_fingerprint(
            method=request.method or "", path=request.path, body=request.data
        ),
        perform=perform,
    )
    response = Response(result.body, status=result.status)
    if result.replayed:
        response["Idempotent-Replayed"] = "true"
    return response


# --- tenants ------------------------------------------------------------------------------


class TenantListView(PlatformView, generics.ListAPIView[Tenant]):
    serializer_class = TenantSerializer
    pagination_class = TenantPagination

    def get_queryset(self) -> QuerySet[Tenant]:
        filters = _query(self.request, TenantFilterSerializer)
        return selectors.tenants(status=filters.get("status"), tier=filters.get("tier"))

    @extend_schema(
        operation_id="tenants_list",
        parameters=[TenantFilterSerializer],
        responses={200: TenantSerializer(many=True), **_errors(400, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="tenants_create",
        examples=[
            OpenApiExample(
                "A new customer",
                value={"slug": "acme-inc", "name": "Acme Inc", "tier": "free"},
                request_only=True,
            )
        ],
        parameters=[IDEMPOTENCY_KEY, REPLAYED],
        request=TenantCreateSerializer,
        responses={
            201: TenantSerializer,
            **_errors(400, 409, 415, 422),
        },
    )
    def post(self, request: Request) -> Response:
        data = _valid(TenantCreateSerializer(data=request.data))
        slug, name, tier = data.pop("slug"), data.pop("name"), data.pop("tier")

        def perform() -> services.Outcome:
            tenant = services.api_tenant_create(
                actor=self.principal.actor, slug=slug, name=name, tier=tier, fields=data
            )
            return services.Outcome(status=201, body=TenantSerializer(tenant).data)

        return _idempotent(self, request, perform)


class TenantDetailView(PlatformView):
    @extend_schema(
        operation_id="tenants_read",
        parameters=[TENANT_SLUG],
        responses={200: TenantSerializer, **_errors(404)},
    )
    def get(self, request: Request, slug: str) -> Response:
        return Response(TenantSerializer(selectors.tenant_get(slug=slug)).data)

    @extend_schema(
        operation_id="tenants_update",
        parameters=[TENANT_SLUG],
        request=TenantUpdateSerializer,
        responses={200: TenantSerializer, **_errors(400, 404, 409, 415)},
    )
    def patch(self, request: Request, slug: str) -> Response:
        tenant = selectors.tenant_get(slug=slug)
        changes = _valid(TenantUpdateSerializer(data=request.data))
        tenant = services.api_tenant_update(
            actor=self.principal.actor, tenant=tenant, changes=changes
        )
        return Response(TenantSerializer(tenant).data)

    @extend_schema(
        operation_id="tenants_deactivate",
        parameters=[TENANT_SLUG],
        description="Deactivates the tenant: suspended, every token revoked, its row and "
        "ledger kept. Deactivating a deactivated tenant changes nothing.",
        responses={200: TenantSerializer, **_errors(404)},
    )
    def delete(self, request: Request, slug: str) -> Response:
        tenant = selectors.tenant_get(slug=slug)
        tenant = services.api_tenant_deactivate(actor=self.principal.actor, tenant=tenant)
        return Response(TenantSerializer(tenant).data)


def _tenant_action(
    operation_id: str, description: str, action: Callable[..., Tenant]
) -> type[PlatformView]:
    class TenantActionView(PlatformView):
        @extend_schema(
            operation_id=operation_id,
            description=description,
            parameters=[TENANT_SLUG],
            request=None,
            responses={200: TenantSerializer, **_errors(404, 409)},
        )
        def post(self, request: Request, slug: str) -> Response:
            tenant = selectors.tenant_get(slug=slug)
            tenant = action(actor=self.principal.actor, tenant=tenant)
            return Response(TenantSerializer(tenant).data)

    TenantActionView.__name__ = TenantActionView.__qualname__ = f"{operation_id}_view"
    return TenantActionView


TenantSuspendView = _tenant_action(
    "tenants_suspend",
    "Every request of the tenant gets 403 until it is resumed (audited: tenant.suspended).",
    services.api_tenant_suspend,
)
TenantResumeView = _tenant_action(
    "tenants_resume",
    "Serve the tenant again (audited: tenant.resumed).",
    services.api_tenant_resume,
)
TenantRevokeTokensView = _tenant_action(
    "tenants_tokens_revoke",
    "Every token issued to the tenant so far stops working (audited: tenant.tokens_revoked).",
    services.api_tenant_revoke_tokens,
)


class TenantTierView(PlatformView):
    @extend_schema(
        operation_id="tenants_change_tier",
        examples=[OpenApiExample("An upgrade", value={"tier": "pro"}, request_only=True)],
        parameters=[TENANT_SLUG],
        description="Move the tenant to another tier: its next request is served by that "
        "tier's routes and limits (audited: tenant.tier_moved).",
        request=TierChangeSerializer,
        responses={200: TenantSerializer, **_errors(400, 404, 409, 415)},
    )
    def post(self, request: Request, slug: str) -> Response:
        tenant = selectors.tenant_get(slug=slug)
        tier = _valid(TierChangeSerializer(data=request.data))["tier"]
        tenant = services.api_tenant_move_tier(actor=self.principal.actor, tenant=tenant, tier=tier)
        return Response(TenantSerializer(tenant).data)


class TenantResetWeekView(PlatformView):
    @extend_schema(
        operation_id="tenants_reset_week",
        parameters=[TENANT_SLUG],
        description="Forgive the tenant's usage so far this week; the ledger stays as it is "
        "(audited: tenant.week_reset).",
        request=None,
        responses={200: WeekResetSerializer, **_errors(404, 409)},
    )
    def post(self, request: Request, slug: str) -> Response:
        tenant = selectors.tenant_get(slug=slug)
        reset = services.api_tenant_week_reset(actor=self.principal.actor, tenant=tenant)
        return Response(WeekResetSerializer(reset).data)


class TenantTokensView(PlatformView):
    @extend_schema(
        operation_id="tenants_tokens_issue",
        examples=[OpenApiExample("An hour", value={"ttl_seconds": 3600}, request_only=True)],
        description="A JWT for the tenant's agent, returned once (the proxy keeps no usable "
        "copy; a retry with the same Idempotency-Key gets the same token, for as long as "
        "it lives or 24 hours). Audited as tenant.token_issued with its jti, never the token.",
        parameters=[TENANT_SLUG, IDEMPOTENCY_KEY, REPLAYED],
        request=TokenIssueSerializer,
        responses={
            201: IssuedTokenSerializer,
            **_errors(400, 404, 409, 415, 422, 503),
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        tenant = selectors.tenant_get(slug=slug)
        ttl = timedelta(seconds=_valid(TokenIssueSerializer(data=request.data))["ttl_seconds"])

        def perform() -> services.Outcome:
            issued = services.api_tenant_token_issue(
                actor=self.principal.actor, tenant=tenant, ttl=ttl
            )
            body = IssuedTokenSerializer(
                {
                    "token": issued.token,
                    "token_type": "Bearer",
                    "tenant": tenant.slug,
                    "jti": issued.jti,
                    "expires_at": issued.expires_at,
                }
            ).data
            return services.Outcome(status=201, body=body, keep_until=issued.expires_at)

        response = _idempotent(self, request, perform)
        # A live credential: not kept by any cache on the way.
        response["Cache-Control"] = "no-store"
        return response


# --- usage --------------------------------------------------------------------------------


class TenantUsageWeekView(PlatformView):
    @extend_schema(
        operation_id="tenants_usage_week",
        description="The tenant's use of its weekly caps: live for this week (what the proxy "
        "enforces), from the ledger for an earlier one; net of staff resets.",
        parameters=[TENANT_SLUG, WeekQuerySerializer],
        responses={200: TenantWeekSerializer, **_errors(400, 404)},
    )
    def get(self, request: Request, slug: str) -> Response:
        tenant = selectors.tenant_get(slug=slug)
        week = selectors.parse_week(_query(request, WeekQuerySerializer).get("week"))
        return Response(TenantWeekSerializer(selectors.tenant_week(tenant=tenant, week=week)).data)


class TenantUsageModelsView(PlatformView):
    @extend_schema(
        operation_id="tenants_usage_models",
        description="The tenant's ledger in a week, one row per model it asked for.",
        parameters=[TENANT_SLUG, WeekQuerySerializer],
        responses={200: TenantModelsSerializer, **_errors(400, 404)},
    )
    def get(self, request: Request, slug: str) -> Response:
        tenant = selectors.tenant_get(slug=slug)
        week = selectors.parse_week(_query(request, WeekQuerySerializer).get("week"))
        body = {
            "tenant": tenant.slug,
            "week": week.id,
            "models": selectors.tenant_models(tenant=tenant, week=week),
        }
        return Response(TenantModelsSerializer(body).data)


class UsageRecordListView(PlatformView, generics.ListAPIView[UsageRecord]):
    serializer_class = UsageRecordSerializer
    pagination_class = RecordPagination

    def get_queryset(self) -> QuerySet[UsageRecord]:
        filters = _query(self.request, RecordFilterSerializer)
        week = filters.get("week")
        return selectors.records(
            tenant=filters.get("tenant"),
            model=filters.get("model"),
            status=filters.get("status"),
            week=selectors.parse_week(week) if week else None,
            since=filters.get("since"),
            until=filters.get("until"),
        )

    @extend_schema(
        operation_id="usage_records_list",
        description="The ledger: one row per request, newest first, a page at a time (follow "
        "`next`).",
        parameters=[RecordFilterSerializer],
        responses={200: UsageRecordSerializer(many=True), **_errors(400, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


# --- tiers and routes ---------------------------------------------------------------------


class TierListView(PlatformView):
    @extend_schema(
        operation_id="tiers_list", responses={200: TierSerializer(many=True), **_errors()}
    )
    def get(self, request: Request) -> Response:
        return Response(TierSerializer(selectors.tiers(), many=True).data)


class TierDetailView(PlatformView):
    @extend_schema(operation_id="tiers_read", responses={200: TierSerializer, **_errors(404)})
    def get(self, request: Request, slug: str) -> Response:
        return Response(TierSerializer(selectors.tier_get(slug=slug)).data)


class RouteListView(PlatformView):
    @extend_schema(
        operation_id="routes_list",
        parameters=[RouteFilterSerializer],
        responses={200: RouteSerializer(many=True), **_errors(400)},
    )
    def get(self, request: Request) -> Response:
        filters = _query(request, RouteFilterSerializer)
        rows = selectors.routes(tier=filters.get("tier"), model=filters.get("model"))
        return Response(RouteSerializer(rows, many=True).data)


class RouteDetailView(PlatformView):
    @extend_schema(operation_id="routes_read", responses={200: RouteSerializer, **_errors(404)})
    def get(self, request: Request, route_id: int) -> Response:
        return Response(RouteSerializer(selectors.route_get(route_id=route_id)).data)


# --- the rest -----------------------------------------------------------------------------


class NotFoundView(PlatformView):
    """Any other path under /api/v1/: the API's 404, not Django's HTML page."""

    authentication_classes: list[type[Any]] = []
    permission_classes: list[type[BasePermission]] = []
    schema = None  # not an operation

    def http_method_not_allowed(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise ApiError(404, "not_found", "No such endpoint.")


class PlatformReaderOrStaff(BasePermission):
    """The schema: for any platform credential, and for staff signed in to the admin (the
    docs page fetches it with the session)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if isinstance(user, Principal):
            return user.can_read()
        return bool(user and user.is_active and user.is_staff)


class SchemaView(SpectacularAPIView):
    authentication_classes = [PlatformAuthentication, SessionAuthentication]
    permission_classes = [PlatformReaderOrStaff]

    def handle_exception(self, exc: Exception) -> Response:
        response: Response = super().handle_exception(exc)
        # An error is the API's JSON error, not a YAML document.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = "application/json"
        return response


class _StaffDocsView(SpectacularSwaggerView):
    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAdminUser]


# Staff only: signed out, the admin's login page, then back here.
docs_view = staff_member_required(_StaffDocsView.as_view(url_name="api-schema"))
