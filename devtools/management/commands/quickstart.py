from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_variables

from routing.config import ConfigError, config_apply, load
from tenants.selectors import tenant_get
from tenants.services import token_issue

DEMO_KEYS = {
    "DEMO_MOONSHOT_KEY_1": "demo-moonshot-key-0001",
    "DEMO_MOONSHOT_KEY_2": "demo-moonshot-key-0002",
    "DEMO_ANTHROPIC_KEY_1": "demo-anthropic-key-0001",
}


class Command(BaseCommand):
    help = (
        "Development quickstart: load the demo configuration (mock provider), make a local "
        "staff login, and print a tenant token with ready-to-run curl and SDK examples."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--config", type=Path, default=settings.BASE_DIR / "config/demo.toml")
        parser.add_argument("--tenant", default="acme")
        parser.add_argument(
            "--url", default="http://127.0.0.1:8000", help="Where the proxy listens."
        )

    @method_decorator(sensitive_variables("environ"))
    def handle(self, *args: Any, config: Path, tenant: str, url: str, **options: Any) -> None:
        if settings.PRODUCTION:
            raise CommandError("quickstart is for development; it refuses PROXY_ENV=production.")
        environ = {**DEMO_KEYS, **os.environ}
        try:
            report = config_apply(data=load(config, environ=environ), environ=environ)
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        found = tenant_get(slug=tenant)
        if found is None:
            raise CommandError(f"The demo configuration has no tenant {tenant!r}.")
        token = token_issue(tenant=found, ttl=timedelta(days=7))
        password = settings.DEV_SECRETS["ADMIN_PASSWORD"]
        User = get_user_model()
        staff = User.objects.filter(username="admin").first() or User(username="admin")
        staff.is_staff = staff.is_superuser = True
        staff.set_password(password)
        staff.save()

        changes = f"{len(report.changes)} change(s)" if report.changes else "already loaded"
        body = (
            '{"model": "auto", "stream": true, "messages": [{"role": "user", "content": "Hello!"}]}'
        )
        self.stdout.write(
            f"""
llm-proxy demo ({config.name}: {changes})

  Proxy:     {url}/v1   (OpenAI-compatible; upstream is the built-in mock provider)
  Tenant:    {found.slug} (tier {found.tier.slug})
  Token:     {token}

  Try it with curl:

curl -sN {url}/v1/chat/completions \\
  -H "Authorization: Bearer {token}" \\
  -H "Content-Type: application/json" \\
  -d '{body}'

  Or with the OpenAI SDK (pip install openai):

python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{url}/v1", api_key="{token}")
for chunk in client.chat.completions.create(
    model="auto", stream=True, messages=[{{"role": "user", "content": "Hello!"}}]
):
    print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
PY

  Or with the Anthropic SDK (pip install anthropic), on the same token and tier:

python - <<'PY'
import anthropic
client = anthropic.Anthropic(base_url="{url}", api_key="{token}")
with client.messages.stream(
    model="auto", max_tokens=200, messages=[{{"role": "user", "content": "Hello!"}}]
) as stream:
    print(stream.get_final_text())
PY

  Or Claude Code: ANTHROPIC_BASE_URL={url} ANTHROPIC_AUTH_TOKEN=<the token> claude
  (its claude-* model names reach the tier's model through the demo's aliases)

  Admin:     {url}/admin/   user: admin   password: {password}
"""
        )
