"""llm-proxy settings: every knob comes from the environment, with working defaults.

With no environment at all the proxy runs on a SQLite file and an in-process counter
store. Development secrets come from ``var/dev-secrets.json`` (ignored by git), which
``make dev-secrets`` writes and ``make run`` and the test suite make sure of; importing
settings never writes a file, and without that file a process makes secrets of its own that
no other process shares. ``PROXY_ENV=production`` turns every missing secret into a
start-up error instead.

A malformed value stops the process at start with a message naming the variable: a
proxy that silently falls back to a default cap or key is worse than one that won't boot
(the readers are in core/env.py).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from core.devsecrets import generate_dev_secrets, read_dev_secrets
from core.env import (
    database_from_url,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    invalid_value,
    load_json_or_file,
)

# Generic Django classes (ModelAdmin[Tenant], QuerySet[Key]) at run time, as mypy sees them.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PROXY_VAR_DIR", BASE_DIR / "var"))


# --- secrets: read from var/dev-secrets.json in development, required in production -------

PROXY_ENV = env_choice("PROXY_ENV", "development", ("development", "production"))
PRODUCTION = PROXY_ENV == "production"

# Read only: `make dev-secrets` (core.devsecrets.ensure_dev_secrets) writes the file. Without
# it this process gets secrets of its own, silently (settings log nothing at import).
DEV_SECRETS: dict[str, str] = {}
if not PRODUCTION:
    DEV_SECRETS = read_dev_secrets(VAR_DIR / "dev-secrets.json") or generate_dev_secrets()


def _secret(name: str, dev_key: str | None = None) -> str:
    value = env_str(name)
    if value:
        return value
    if PRODUCTION:
        raise ImproperlyConfigured(f"{name} must be set when PROXY_ENV=production.")
    return DEV_SECRETS.get(dev_key or name, "")


SECRET_KEY = _secret("SECRET_KEY")
DEBUG = env_bool("DEBUG", False)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off when PROXY_ENV=production.")
if PRODUCTION and (len(SECRET_KEY) < 32 or SECRET_KEY.startswith("django-insecure")):
    raise ImproperlyConfigured("SECRET_KEY must be a random string of at least 32 characters.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# Comma-separated Fernet keys: the first encrypts, all decrypt (rotation without downtime).
PROXY_ENCRYPTION_KEYS = env_list("PROXY_ENCRYPTION_KEYS") or (
    [] if PRODUCTION else [DEV_SECRETS["PROXY_ENCRYPTION_KEY"]]
)

if not PROXY_ENCRYPTION_KEYS:
    raise ImproperlyConfigured("PROXY_ENCRYPTION_KEYS must be set when PROXY_ENV=production.")


def _check_fernet_keys(keys: list[str]) -> None:
    from cryptography.fernet import Fernet

    for index, key in enumerate(keys):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"PROXY_ENCRYPTION_KEYS entry #{index + 1} is not a valid Fernet key "
                "(32 url-safe base64-encoded bytes; make one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)."
            ) from None


_check_fernet_keys(PROXY_ENCRYPTION_KEYS)


# --- JWT -----------------------------------------------------------------------------------
# Verification keys are a JWKS (inline JSON or a path to a file); every key names its kid
# and alg. Only algorithms in JWT_ALGORITHMS are accepted, and a token's alg must equal its
# key's alg, which rules out HS/RS key confusion by construction.

JWT_ALGORITHMS = env_list("JWT_ALGORITHMS", ["EdDSA"])
_KNOWN_ALGS = {"EdDSA", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"}
for _alg in JWT_ALGORITHMS:
    if _alg not in _KNOWN_ALGS:
        raise invalid_value(
            "JWT_ALGORITHMS", ",".join(JWT_ALGORITHMS), ", ".join(sorted(_KNOWN_ALGS))
        )
JWT_ISSUER = env_str("JWT_ISSUER", "llm-proxy")
JWT_AUDIENCE = env_str("JWT_AUDIENCE", "llm-proxy")
JWT_LEEWAY_SECONDS = env_int("JWT_LEEWAY_SECONDS", 30, minimum=0)
JWT_MAX_TOKEN_BYTES = env_int("JWT_MAX_TOKEN_BYTES", 8192, minimum=256)
# The longest a token may live (exp - iat, in seconds; 30 days by default): a token signed
# with a far-off exp (a leaked signing key, a platform bug) is refused, and token_issue
# refuses to mint one.
JWT_MAX_LIFETIME = env_int("JWT_MAX_LIFETIME", 30 * 24 * 3600, minimum=60)
JWT_SIGNING_JWK = _secret("JWT_SIGNING_JWK") if not PRODUCTION else env_str("JWT_SIGNING_JWK")


def _jwks() -> dict[str, Any]:
    raw = env_str("JWT_JWKS")
    if raw:
        data = load_json_or_file("JWT_JWKS", raw)
    elif JWT_SIGNING_JWK:
        from proxy_site.jwtkeys import public_jwks_from_signing_jwk

        data = public_jwks_from_signing_jwk(load_json_or_file("JWT_SIGNING_JWK", JWT_SIGNING_JWK))
    else:
        raise ImproperlyConfigured("JWT_JWKS must be set when PROXY_ENV=production.")
    from proxy_site.jwtkeys import validate_jwks

    try:
        validate_jwks(data, allowed_algorithms=JWT_ALGORITHMS)
    except ValueError as exc:
        raise ImproperlyConfigured(f"JWT_JWKS: {exc}") from None
    return dict(data)


JWT_JWKS = _jwks()


# --- Database, cache and counter store -----------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL", "sqlite:///var/llm-proxy.sqlite3")
DATABASES = {"default": database_from_url("DATABASE_URL", DATABASE_URL, base_dir=BASE_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# REDIS_URL unset: an embedded in-process store that runs the same Lua scripts (one process
# only). Set: real Redis, which is also Django's cache through django-redis.
REDIS_URL = env_str("REDIS_URL")
# REDIS_CLUSTER=true: REDIS_URL names a Redis Cluster by one or more of its nodes, as
# comma-separated redis:// or rediss:// URLs (the client learns every other node from any
# of them, so more than one only matters when a seed may be down at start). The first URL's
# credentials and TLS options hold for every node; a cluster has database 0 only. Every key
# a script, pipeline or stream read touches at once shares its tenant's hash tag, so nothing
# spans two slots (core/redis.py, usage/counters.py); Django's cache then goes through the
# same cluster client (core/cache.py).
REDIS_CLUSTER = env_bool("REDIS_CLUSTER", False)
_REDIS_SEEDS = [url.strip() for url in REDIS_URL.split(",") if url.strip()]
if REDIS_CLUSTER:
    if not _REDIS_SEEDS:
        raise ImproperlyConfigured("REDIS_CLUSTER is on: REDIS_URL must name the cluster's nodes.")
    for _seed in _REDIS_SEEDS:
        _parts = urlsplit(_seed)
        if _parts.scheme not in ("redis", "rediss") or not _parts.hostname:
            raise invalid_value("REDIS_URL", _seed, "redis:// or rediss:// URLs of cluster nodes")
        if _parts.path.strip("/") not in ("", "0"):
            raise invalid_value("REDIS_URL", _seed, "no database number (a cluster has only 0)")
elif REDIS_URL and urlsplit(REDIS_URL).scheme not in ("redis", "rediss", "unix"):
    raise invalid_value("REDIS_URL", REDIS_URL, "a redis://, rediss:// or unix:// URL")
# Short on purpose: an unreachable Redis must turn into a clear 503 well within a second.
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 0.3, minimum=0.01)
# Per node on a cluster.
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 256, minimum=1)

CACHES: dict[str, dict[str, Any]]
if REDIS_CLUSTER:
    CACHES = {
        "default": {
            # django-redis has no cluster client: this one borrows core/redis.py's.
            "BACKEND": "core.cache.ClusterRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "llmproxy",
        }
    }
elif REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "llmproxy",
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": REDIS_SOCKET_TIMEOUT,
                "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


# --- The proxy -----------------------------------------------------------------------------

# The most body bytes an API request (/v1/) may send, declared or chunked. Under Daphne the
# framing guard (proxy_site/framing.py) refuses a declared length over it (413) as soon as
# the headers end, without a 100 Continue, holds every body in memory (never a temporary
# file) and refuses a chunked one the moment it crosses the cap; other paths (the admin)
# get the same treatment at DATA_UPLOAD_MAX_MEMORY_SIZE below.
PROXY_MAX_BODY_BYTES = env_int("PROXY_MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1024)
# The API's views read request.body, which Django refuses (RequestDataTooBig, a 500) over
# DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MiB by default: so that cap follows the proxy's own.
# BodySizeLimit (proxy_site/handlers.py) has already refused any API body over
# PROXY_MAX_BODY_BYTES with a 413 before reading it. The same cap bounds the admin's POSTs,
# which is fine at 4 MiB: an admin form is a few KiB, so nothing legitimate comes near it,
# and a bigger one is refused before it is parsed (413 by the framing guard, which also
# caps a chunked one there; else 400 by Django). Never below Django's default,
# so a small PROXY_MAX_BODY_BYTES does not starve the admin.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(PROXY_MAX_BODY_BYTES, 2_621_440)
PROXY_MAX_MESSAGES = env_int("PROXY_MAX_MESSAGES", 2000, minimum=1)
# The most tokens one request may reserve (prompt estimate + completion allowance).
PROXY_MAX_REQUEST_TOKENS = env_int("PROXY_MAX_REQUEST_TOKENS", 2_000_000, minimum=1000)
# How long a process trusts its cached view of a tenant (tier, routes, keys) before reading
# the database again. Changes made through Django clear it at once in their own process and
# within PROXY_CONTEXT_POLL in every other one (through Redis); the TTL is the backstop.
PROXY_CONTEXT_TTL = env_float("PROXY_CONTEXT_TTL", 30.0, minimum=0.0)
# How often a process asks Redis whether another process changed tenants, tiers or routes.
PROXY_CONTEXT_POLL = env_float("PROXY_CONTEXT_POLL", 0.5, minimum=0.0)
PROXY_UPSTREAM_MAX_CONNECTIONS = env_int("PROXY_UPSTREAM_MAX_CONNECTIONS", 512, minimum=1)
# What carries upstream requests (core/http.py): aiohttp's connector, whose cost per request
# stays flat however many are open, or httpx's own (httpcore), whose pool does not.
PROXY_UPSTREAM_TRANSPORT = env_choice("PROXY_UPSTREAM_TRANSPORT", "aiohttp", ("aiohttp", "httpx"))
# Warm at start (proxy_site/warmup.py): connections, scripts, the busiest tenants' contexts
# and the upstream client ready before /readyz says ready; each step within the timeout.
PROXY_WARMUP = env_bool("PROXY_WARMUP", True)
PROXY_WARMUP_TIMEOUT = env_float("PROXY_WARMUP_TIMEOUT", 10.0, minimum=0.1)
# The most a provider's non-streamed answer may be, decoded (a gzip bomb is measured by what
# it inflates to): a 502 past it, and the worker never holds more. The largest real chat
# completion is a few MiB (a long answer, n > 1, logprobs); 32 MiB leaves room for all that.
PROXY_MAX_ANSWER_BYTES = env_int("PROXY_MAX_ANSWER_BYTES", 32 * 1024 * 1024, minimum=65536)
# The most one event of a provider's stream may be, decoded: the stream ends with an error
# event past it. Some providers send a tool call's whole arguments in one event, so it is not
# small; a stream's total is not capped (it is bounded by its deadline, and held only one
# event and PROXY_STREAM_BUFFER_BYTES at a time, however long it runs).
PROXY_MAX_EVENT_BYTES = env_int("PROXY_MAX_EVENT_BYTES", 8 * 1024 * 1024, minimum=65536)
# The staff console's live updates reach every process over the channel layer: through Redis
# when there is one (publish/subscribe: nothing is stored), else in process (one process).
# CHANNEL_LAYER_REDIS_URL is that Redis, REDIS_URL's by default. channels-redis has no cluster
# client, and needs none: it only publishes and subscribes, which any one node of a Redis
# Cluster serves for the whole cluster (a message published on one node reaches subscribers
# on every other), so on a cluster it defaults to the first seed node, used as a plain Redis.
# Each message is then copied to every node of the cluster: a busy proxy on a large cluster
# may point this at a small Redis of its own instead.
CHANNEL_LAYER_REDIS_URL = env_str("CHANNEL_LAYER_REDIS_URL") or (
    _REDIS_SEEDS[0] if REDIS_CLUSTER else REDIS_URL
)
if CHANNEL_LAYER_REDIS_URL and urlsplit(CHANNEL_LAYER_REDIS_URL).scheme not in (
    "redis",
    "rediss",
    "unix",
):
    raise invalid_value(
        "CHANNEL_LAYER_REDIS_URL", CHANNEL_LAYER_REDIS_URL, "a redis://, rediss:// or unix:// URL"
    )
CHANNEL_LAYERS = {
    "default": (
        {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            # Publish/subscribe channels ignore the database number: the prefix carries it,
            # so deployments sharing a Redis server on different databases stay apart.
            "CONFIG": {
                "hosts": [CHANNEL_LAYER_REDIS_URL],
                "prefix": f"lp:ch:{urlsplit(CHANNEL_LAYER_REDIS_URL).path.strip('/') or 0}",
            },
        }
        if CHANNEL_LAYER_REDIS_URL
        else {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    )
}
# Spend alerts: where to POST them (Standard Webhooks: webhook-id, webhook-timestamp,
# webhook-signature), and the signing secret ("whsec_" + base64). Unset: dashboard only.
PROXY_ALERT_WEBHOOK_URL = env_str("PROXY_ALERT_WEBHOOK_URL")
PROXY_ALERT_WEBHOOK_SECRET = env_str("PROXY_ALERT_WEBHOOK_SECRET")
if PROXY_ALERT_WEBHOOK_URL and not PROXY_ALERT_WEBHOOK_SECRET.startswith("whsec_"):
    raise invalid_value(
        "PROXY_ALERT_WEBHOOK_SECRET",
        "(hidden)",
        'a "whsec_" secret when PROXY_ALERT_WEBHOOK_URL is set',
    )
PROXY_ANTHROPIC_VERSION = env_str("PROXY_ANTHROPIC_VERSION", "2023-06-01")

# --- The provisioning API (/api/v1/, the api app) and observability -------------------------
# Platform credentials: a service JWT signed by a JWT_JWKS key with this audience (never a
# tenant's: theirs is JWT_AUDIENCE) and a `scope` claim ("read", "write"), or a staff API
# token made in the admin (stored hashed).
PROXY_API_AUDIENCE = env_str("PROXY_API_AUDIENCE", "llm-proxy-api")
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.authentication.PlatformAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.PlatformScope"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "llm-proxy provisioning API",
    "DESCRIPTION": "Tenants, tokens, tiers, routes and usage, for the platform's own code.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The docs page's assets come from the installed sidecar package, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
# /metrics (Prometheus): open to a bearer token when one is set, else to these networks.
PROXY_METRICS_TOKEN = env_str("PROXY_METRICS_TOKEN")
PROXY_METRICS_NETWORKS = env_list("PROXY_METRICS_NETWORKS", ["127.0.0.1/32", "::1/128"])
for _network in PROXY_METRICS_NETWORKS:  # refused at start, not as a 500 on every scrape
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise invalid_value("PROXY_METRICS_NETWORKS", _network, "IP networks (CIDR)") from None
# /readyz: how long each check may take, and how old the oldest waiting ledger entry may be
# before the drain counts as stuck (the database down, say: then every process is unready).
PROXY_READYZ_TIMEOUT = env_float("PROXY_READYZ_TIMEOUT", 0.5, minimum=0.05)
PROXY_READYZ_LEDGER_MAX_AGE = env_float("PROXY_READYZ_LEDGER_MAX_AGE", 120.0, minimum=1.0)
# A tenant label on the request metrics: one series per tenant, so only when asked for.
PROXY_METRICS_TENANT_LABEL = env_bool("PROXY_METRICS_TENANT_LABEL", False)
# prometheus_client's multiprocess mode: every process of a host writes its samples here
# and /metrics reads them all. Set before anything imports prometheus_client.
PROMETHEUS_MULTIPROC_DIR = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "prometheus")
)
# The `anthropic-beta` features an Anthropic client may ask of an Anthropic route
# (comma-separated); unset, every beta the client names is forwarded (Claude Code sends
# several, and new ones every month). A beta not listed is dropped from the header.
PROXY_ANTHROPIC_BETAS: frozenset[str] | None = (
    frozenset(env_list("PROXY_ANTHROPIC_BETAS")) if env_str("PROXY_ANTHROPIC_BETAS") else None
)
# A stream whose provider has not started answering after this many seconds is opened to the
# client anyway, with `: keep-alive` comments every as many seconds, so that clients and load
# balancers with idle timeouts do not drop it while a slow model thinks.
PROXY_STREAM_KEEPALIVE = env_float("PROXY_STREAM_KEEPALIVE", 5.0, minimum=0.1)
# A streamed answer holds at most this many bytes for a client that reads slowly, and cuts
# off a client that stays that far behind this long.
PROXY_STREAM_BUFFER_BYTES = env_int("PROXY_STREAM_BUFFER_BYTES", 1024 * 1024, minimum=4096)
PROXY_SLOW_CLIENT_TIMEOUT = env_float("PROXY_SLOW_CLIENT_TIMEOUT", 30.0, minimum=0.1)
# A pooled key that got a 429 without a usable Retry-After rests this long.
PROXY_KEY_COOLDOWN = env_float("PROXY_KEY_COOLDOWN", 30.0, minimum=1.0)

# Usage weeks: ISO weeks in UTC unless told otherwise.
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
PROXY_WEEK_START_DAY = _WEEKDAYS.index(env_choice("PROXY_WEEK_START", "monday", _WEEKDAYS))
PROXY_WEEK_TIMEZONE = env_str("PROXY_WEEK_TIMEZONE", "UTC")
try:
    from zoneinfo import ZoneInfo

    ZoneInfo(PROXY_WEEK_TIMEZONE)
except (ValueError, KeyError, OSError):
    raise invalid_value(
        "PROXY_WEEK_TIMEZONE", PROXY_WEEK_TIMEZONE, "an IANA time zone such as UTC"
    ) from None
# A reservation and its concurrency lease live this long unless renewed: each process's
# heartbeat renews its live requests' every third of it, so a worker that dies (kill -9)
# frees its leases within this, and its requests are billed as lost (usage/limits.py).
PROXY_LEASE_TTL = env_float("PROXY_LEASE_TTL", 30.0, minimum=1.0)
# The longest a request may hold its reservation: the heartbeat stops renewing past this
# (a leaked admission cannot hold a tenant's allowance for ever); total_timeout stays below.
PROXY_RESERVATION_TTL = env_int("PROXY_RESERVATION_TTL", 900, minimum=10)
# How long a settled request id is remembered, so a repeated settlement charges nothing.
PROXY_SETTLED_MARKER_TTL = env_int("PROXY_SETTLED_MARKER_TTL", 600, minimum=60)
# A prompt's token estimate, for the reservation: bytes of the request body per token.
PROXY_PROMPT_BYTES_PER_TOKEN = env_float("PROXY_PROMPT_BYTES_PER_TOKEN", 3.0, minimum=0.5)
# Each proxy process moves settled usage from Redis into the database itself; turn this off
# to leave it to `manage.py usage_worker` alone.
PROXY_LEDGER_WORKER = env_bool("PROXY_LEDGER_WORKER", True)
PROXY_LEDGER_DRAIN_INTERVAL = env_float("PROXY_LEDGER_DRAIN_INTERVAL", 1.0, minimum=0.01)


# --- Django --------------------------------------------------------------------------------

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "audit",
    "tenants",
    "routing",
    "usage",
    "devtools",
    "console",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "api",
]

# The admin's stack. The proxy API (/v1/) is served by a separate handler with only the
# async-native middleware in PROXY_MIDDLEWARE, so the hot path never hops to a thread.
MIDDLEWARE = [
    "proxy_site.middleware.request_id_middleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After authentication: the request's user is the actor of the audit rows it writes.
    "audit.middleware.audit_actor_middleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
PROXY_MIDDLEWARE = ["proxy_site.middleware.api_headers_middleware"]

ROOT_URLCONF = "proxy_site.urls"
ASGI_APPLICATION = "proxy_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "proxy_site.context_processors.environment",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# The admin's CSS and JS, served by WhiteNoise: in development straight from the apps, in
# production from STATIC_ROOT after `manage.py collectstatic`. Development looks files up per
# request (autorefresh), so STATIC_ROOT need not exist there and settings create no directory.
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = not PRODUCTION

# Errors reports (DEBUG pages, mail to admins) never show secrets: see proxy_site/security.py.
DEFAULT_EXCEPTION_REPORTER_FILTER = "proxy_site.security.SecretsReporterFilter"
ADMIN_LOGIN_MAX_FAILURES = env_int("ADMIN_LOGIN_MAX_FAILURES", 5, minimum=1)
ADMIN_LOGIN_LOCKOUT = env_int("ADMIN_LOGIN_LOCKOUT", 900, minimum=1)

# Behind a TLS-terminating load balancer that sets X-Forwarded-Proto.
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
# plain: for people (development); json: one object per line, for a log pipeline.
LOG_FORMAT = env_choice("LOG_FORMAT", "plain", ("plain", "json"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logs.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s"},
        "json": {"()": "core.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # httpx logs every request URL at INFO: quiet unless DEBUG is asked for.
        "httpx": {"level": "DEBUG" if LOG_LEVEL == "DEBUG" else "WARNING"},
        "httpcore": {"level": "DEBUG" if LOG_LEVEL == "DEBUG" else "WARNING"},
        "daphne": {"level": "WARNING"},
        # Django's own console handler would print its lines a second time, as plain text:
        # they go to the root handler only (in the configured format).
        "django": {"handlers": []},
    },
}
