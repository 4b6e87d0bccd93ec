"""Probes outside the API: the base URL and liveness, answered without a token.

Clients such as Claude Code probe the base URL (`HEAD /`) before every session, and
orchestrators poll `/healthz`. Both answer from the process alone, touching neither the
database nor Redis: `/healthz` says the process serves requests (liveness), not that its
dependencies are up (readiness). They are served by the full Django stack like the admin,
so ALLOWED_HOSTS still applies; they take GET and HEAD only, need no session, and are exempt
from CSRF so that any other method is a plain 405.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe


def _probe(request: HttpRequest, body: dict[str, str]) -> HttpResponse:
    if request.method == "HEAD":
        return HttpResponse(content_type="application/json")
    return JsonResponse(body)


@csrf_exempt
@require_safe
def root(request: HttpRequest) -> HttpResponse:
    return _probe(request, {"service": "llm-proxy", "status": "ok"})


@csrf_exempt
@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    return _probe(request, {"status": "ok"})
