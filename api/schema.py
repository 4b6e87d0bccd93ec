# DRF and drf-spectacular ship no type hints: their base classes are Any to mypy.
# mypy: disallow-subclassing-any=False, disallow-untyped-calls=False
"""How the OpenAPI schema describes platform credentials: two bearer schemes, either one."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class PlatformAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.PlatformAuthentication"
    name = ["serviceJwt", "apiToken"]

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[Any]]]:
        # Either one (OR), not both: a list of requirements, each with one scheme.
        return [{"serviceJwt": []}, {"apiToken": []}]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return [
            {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "A service JWT signed by a JWT_JWKS key: aud PROXY_API_AUDIENCE, "
                'iss JWT_ISSUER, sub the platform service, scope "read", "write" or '
                '"read write". A tenant token (aud JWT_AUDIENCE) is refused.',
            },
            {
                "type": "http",
                "scheme": "bearer",
                "description": "A staff API token (lpk_...), made and revoked in the admin.",
            },
        ]
