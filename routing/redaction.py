"""What a provider says about the proxy's own set-up never reaches a tenant.

A provider's error text may quote the pooled key, the URL it was called on, the key's name
and the upstream model ("model kimi-k2 not found for key pool-1 at https://…/v1"). Each is
the proxy's business: the key is a secret, and the others tell a tenant which provider,
account and model sit behind its tier. Messages are cleaned here before any client sees
them; answer bodies and stream events have the key removed by the key's own auth object
(routing/keyring.py) and their ``model`` field rewritten by the codecs.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from core.errors import ProxyError
from routing.context import PooledKey, Route

# Labels shorter than this are ordinary words or numbers ("a", "01"): replacing them would
# garble the message and hide nothing.
_MIN_LABEL = 3


def redact(text: str, *, route: Route, key: PooledKey) -> str:
    """``text`` without the key, the provider's address, the key's label or the upstream
    model name (which becomes the tenant's name for the model)."""
    text = key.auth.scrub(text)
    base_url = route.provider.base_url.rstrip("/")
    host = urlsplit(base_url).netloc
    for address in (base_url, host):
        if address and address in text:
            text = text.replace(address, "[provider]")
    if len(key.label) >= _MIN_LABEL and key.label in text:
        text = _whole_word(key.label).sub("[key]", text)
    upstream = route.upstream_model
    if upstream != route.model and upstream in text:
        # A function, not a template: the tenant's name is any string it asked for (an
        # alias pattern matches it), and `\g<0>` in it must stay text.
        public = route.model
        text = _model_name(upstream).sub(lambda _: public, text)
    return text


# How much of a provider's message a client is shown, cut only once it is redacted.
MAX_MESSAGE = 500


def redact_error(error: ProxyError, *, route: Route, key: PooledKey) -> ProxyError:
    """``error`` with its message redacted and shortened (the same error when there was
    nothing to change)."""
    message = redact(error.message, route=route, key=key)[:MAX_MESSAGE]
    if message == error.message:
        return error
    return ProxyError(
        error.status,
        message,
        code=error.code,
        type=error.type,
        param=error.param,
        headers=error.headers,
        transient=error.transient,
    )


def _model_name(name: str) -> re.Pattern[str]:
    # The name and its dated or suffixed variants, which providers quote for an alias
    # ("gpt-4o" answers as "gpt-4o-2024-08-06"): all of them name the upstream model.
    return re.compile(rf"(?<![\w.-]){re.escape(name)}(?:-[\w.]+)*(?![\w-])")


def _whole_word(word: str) -> re.Pattern[str]:
    # Not inside a longer name: "kimi-k2" in "kimi-k2-turbo" is another model's name.
    return re.compile(rf"(?<![\w.-]){re.escape(word)}(?![\w-]|\.\w)")
