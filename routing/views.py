"""The API's endpoints: one thin view per endpoint and wire format.

A request's journey is routing/pipeline.py's; a view only names the codec of the format its
endpoint speaks.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from core.errors import ProxyError, error_response
from routing.codecs import OPENAI_CHAT
from routing.context import aauthenticate
from routing.pipeline import aserve


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    return await aserve(request, codec=OPENAI_CHAT)


@csrf_exempt
async def list_models(request: HttpRequest) -> HttpResponseBase:
    try:
        if request.method != "GET":
            raise ProxyError(405, "Use GET.", code="method_not_allowed", headers={"Allow": "GET"})
        context = await aauthenticate(request)
    except ProxyError as error:
        return error_response(error)
    return JsonResponse(
        {
            "object": "list",
            "data": [
                {"id": model, "object": "model", "created": 0, "owned_by": "llm-proxy"}
                for model in context.models
            ],
        }
    )


@csrf_exempt
async def unknown_path(request: HttpRequest, rest: str = "") -> HttpResponseBase:
    """Any other path under /v1/: a 404 in the API's shape, not Django's HTML page (which
    SDKs would report as something else entirely). Anthropic's shape under /v1/messages."""
    error = ProxyError(404, f"Unknown API path: {request.method} {request.path}", code="not_found")
    return error_response(error, anthropic=request.path.startswith("/v1/messages"))
