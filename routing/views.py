"""The API's endpoints: one thin view per endpoint and wire format.

A request's journey is routing/pipeline.py's; a view only names the codec of the format its
endpoint speaks.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from core.errors import ProxyError, error_response
from routing.codecs.registry import (
    ANTHROPIC_COUNT_TOKENS,
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
)
from routing.codecs.responses_request import NOT_STORED
from routing.context import aauthenticate
from routing.pipeline import acount_tokens, aserve


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    return await aserve(request, codec=OPENAI_CHAT)


@csrf_exempt
async def messages(request: HttpRequest) -> HttpResponseBase:
    # `?beta=true` (the Anthropic SDK's beta client, Claude Code) is the same endpoint: the
    # betas themselves travel in the anthropic-beta header.
    return await aserve(request, codec=ANTHROPIC_MESSAGES)


@csrf_exempt
async def responses(request: HttpRequest) -> HttpResponseBase:
    return await aserve(request, codec=OPENAI_RESPONSES)


@csrf_exempt
async def count_tokens(request: HttpRequest) -> HttpResponseBase:
    return await acount_tokens(request, codec=ANTHROPIC_COUNT_TOKENS)


@csrf_exempt
async def stored_response(
    request: HttpRequest, response_id: str, rest: str = ""
) -> HttpResponseBase:
    """GET/DELETE /v1/responses/{id} (and its /cancel, /input_items): nothing is stored. A
    tenant's token is still checked first, so the answer tells a stranger nothing."""
    try:
        await aauthenticate(request)
    except ProxyError as refusal:
        return error_response(refusal)
    return error_response(
        ProxyError(
            404,
            f"Response with id '{response_id}' not found: {NOT_STORED}.",
            code="response_not_found",
            param="response_id",
        )
    )


@csrf_exempt
async def list_models(request: HttpRequest) -> HttpResponseBase:
    """The models the tenant may ask for, in Anthropic's list shape for an Anthropic client
    (it sends anthropic-version), else in OpenAI's."""
    anthropic = "anthropic-version" in request.headers
    try:
        if request.method != "GET":
            raise ProxyError(405, "Use GET.", code="method_not_allowed", headers={"Allow": "GET"})
        context = await aauthenticate(request)
    except ProxyError as error:
        return error_response(error, anthropic=anthropic)
    models = context.models
    if anthropic:
        data = [
            {"type": "model", "id": model, "display_name": model, "created_at": _EPOCH}
            for model in models
        ]
        return JsonResponse(
            {
                "data": data,
                "has_more": False,
                "first_id": models[0] if models else None,
                "last_id": models[-1] if models else None,
            }
        )
    return JsonResponse(
        {
            "object": "list",
            "data": [
                {"id": model, "object": "model", "created": 0, "owned_by": "llm-proxy"}
                for model in models
            ],
        }
    )


_EPOCH = "1970-01-01T00:00:00Z"  # the proxy does not know when a provider released a model


@csrf_exempt
async def unknown_path(request: HttpRequest, rest: str = "") -> HttpResponseBase:
    """Any other path under /v1/: a 404 in the API's shape, not Django's HTML page (which
    SDKs would report as something else entirely). Anthropic's shape under /v1/messages."""
    error = ProxyError(404, f"Unknown API path: {request.method} {request.path}", code="not_found")
    return error_response(error, anthropic=request.path.startswith("/v1/messages"))
