"""Declarative configuration: a TOML file describes tiers, providers, keys, routes, tenants.

Applying a file makes the database match it and reports what changed; applying the same
file again changes nothing. Everything is validated before anything is written, and the
writes happen in one transaction, so a bad file leaves the database as it was.

What "declarative" covers: every object the file names is created or updated to match.
Pooled keys of a provider the file names, and routes of a tier the file names, that the
file does not list are disabled (not deleted: the ledger still points at them). Tenants the
file does not name are left alone, since platforms usually create those through the admin.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.views.decorators.debug import sensitive_variables

from routing import keyring
from routing.models import ModelRoute, Provider, ProviderKey
from tenants.models import Tenant, Tier


class ConfigError(Exception):
    pass


@dataclass
class ConfigReport:
    changes: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.changes.append(line)


_TIER_FIELDS = {
    "name": str,
    "weekly_token_cap": int,
    "weekly_cost_cap_usd": Decimal,
    "requests_per_minute": int,
    "max_concurrent_requests": int,
    "default_max_tokens": int,
    "rate_limits_fail_open": bool,
}
_PROVIDER_FIELDS = {
    "kind": str,
    "base_url": str,
    "connect_timeout": float,
    "first_byte_timeout": float,
    "idle_timeout": float,
    "total_timeout": float,
    "enabled": bool,
}
# A field a tier or provider table leaves out goes back to its default, so deleting a line
# from the file (a cap, say) really removes it. Tenants are different: staff suspend them in
# the admin, and re-applying the file must not quietly undo that.
_TIER_DEFAULTS: dict[str, Any] = {
    "weekly_token_cap": None,
    "weekly_cost_cap_usd": None,
    "requests_per_minute": 60,
    "max_concurrent_requests": 4,
    "default_max_tokens": 4096,
    "rate_limits_fail_open": False,
}
_PROVIDER_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 5.0,
    "first_byte_timeout": 60.0,
    "idle_timeout": 60.0,
    "total_timeout": 600.0,
    "enabled": True,
}
_KEY_FIELDS = {"label": str, "env": str, "weight": int, "enabled": bool}
_ROUTE_FIELDS = {
    "tier": str,
    "model": str,
    "provider": str,
    "upstream_model": str,
    "priority": int,
    "input_usd_per_mtok": Decimal,
    "output_usd_per_mtok": Decimal,
    "enabled": bool,
}
_TENANT_FIELDS = {
    "name": str,
    "tier": str,
    "status": str,
    "weekly_token_cap_override": int,
    "weekly_cost_cap_usd_override": Decimal,
    "requests_per_minute_override": int,
    "max_concurrent_requests_override": int,
}


def _fields(
    where: str, data: Any, spec: Mapping[str, type], required: tuple[str, ...]
) -> dict[str, Any]:
    """Check one table against its spec; returns the values converted to their types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table.")
    unknown = sorted(set(data) - set(spec))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}.")
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"{where}: missing field(s) {', '.join(missing)}.")
    out: dict[str, Any] = {}
    for name, value in data.items():
        kind = spec[name]
        if kind is Decimal:
            # Prices are written as strings ("0.60") so no float rounding sneaks in.
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise ConfigError(f'{where}.{name} must be a decimal string such as "0.60".')
            try:
                out[name] = Decimal(str(value))
            except InvalidOperation:
                raise ConfigError(f"{where}.{name}: {value!r} is not a decimal number.") from None
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{where}.{name} must be a number.")
            out[name] = float(value)
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}.{name} must be an integer.")
            out[name] = value
        elif not isinstance(value, kind):
            raise ConfigError(f"{where}.{name} must be a {kind.__name__}.")
        else:
            out[name] = value
    return out


def _table(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table of named entries.")
    return value


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@sensitive_variables()
def _expand(value: Any, environ: Mapping[str, str]) -> Any:
    """Expand ${NAME} and ${NAME:-default} in string values (one file, many environments)."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ and environ[name] != "":
                return environ[name]
            if default is None:
                raise ConfigError(f"Environment variable not set: {name}.")
            return default

        return _VARIABLE.sub(replace, value)
    if isinstance(value, list):
        return [_expand(item, environ) for item in value]
    if isinstance(value, dict):
        return {key: _expand(item, environ) for key, item in value.items()}
    return value


@sensitive_variables("environ")
def load(path: Path, *, environ: Mapping[str, str]) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    expanded: dict[str, Any] = _expand(data, environ)
    return expanded


def _sync(obj: models.Model, values: dict[str, Any], report: ConfigReport, label: str) -> None:
    """Create or update ``obj`` with ``values``, validating it, and note what changed."""
    creating = obj._state.adding
    if creating:
        changed = list(values)
    else:
        changed = [name for name, value in values.items() if getattr(obj, name) != value]
    for name in changed:
        setattr(obj, name, values[name])
    if not creating and not changed:
        return
    try:
        obj.full_clean()
    except ValidationError as exc:
        details = "; ".join(f"{k}: {', '.join(v)}" for k, v in exc.message_dict.items())
        raise ConfigError(f"{label}: {details}") from None
    obj.save()
    report.add(f"created {label}" if creating else f"updated {label} ({', '.join(changed)})")


@sensitive_variables()  # the environment and the provider keys read from it
def config_apply(*, data: dict[str, Any], environ: Mapping[str, str]) -> ConfigReport:
    unknown = sorted(set(data) - {"tiers", "providers", "routes", "tenants"})
    if unknown:
        raise ConfigError(f"Unknown top-level section(s): {', '.join(unknown)}.")

    tiers = {
        slug: _fields(f"[tiers.{slug}]", spec, _TIER_FIELDS, ("name",))
        for slug, spec in _table(data, "tiers").items()
    }
    providers: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    missing_env: list[str] = []
    for slug, spec in _table(data, "providers").items():
        where = f"[providers.{slug}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a table.")
        spec = dict(spec)
        raw_keys = spec.pop("keys", [])
        fields = _fields(where, spec, _PROVIDER_FIELDS, ("kind", "base_url"))
        if not isinstance(raw_keys, list):
            raise ConfigError(f"{where}.keys must be an array of tables.")
        keys = []
        for index, raw_key in enumerate(raw_keys):
            key = _fields(f"{where}.keys[{index}]", raw_key, _KEY_FIELDS, ("label", "env"))
            secret = environ.get(key["env"], "")
            if not secret:
                missing_env.append(key["env"])
            key["secret"] = secret
            keys.append(key)
        labels = [k["label"] for k in keys]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{where}.keys: labels must be unique.")
        providers[slug] = (fields, keys)
    if missing_env:
        names = ", ".join(sorted(set(missing_env)))
        raise ConfigError(f"Environment variable(s) not set or empty: {names}.")

    raw_routes = data.get("routes", [])
    if not isinstance(raw_routes, list):
        raise ConfigError("[[routes]] must be an array of tables.")
    routes = [
        _fields(
            f"[[routes]] #{index + 1}",
            spec,
            _ROUTE_FIELDS,
            ("tier", "model", "provider", "upstream_model"),
        )
        for index, spec in enumerate(raw_routes)
    ]
    tenants = {
        slug: _fields(f"[tenants.{slug}]", spec, _TENANT_FIELDS, ("name", "tier"))
        for slug, spec in _table(data, "tenants").items()
    }

    report = ConfigReport()
    with transaction.atomic():
        _apply(tiers, providers, routes, tenants, report)
    return report


_M = TypeVar("_M", Tier, Provider)


def _named(model: type[_M], known: dict[str, _M], slug: str, where: str) -> _M:
    """A tier or provider the file refers to: one it defines, or one already in the database."""
    if slug not in known:
        found = model.objects.filter(slug=slug).first()
        if found is None:
            raise ConfigError(f"{where}: no {model._meta.verbose_name} {slug!r}.")
        known[slug] = found
    return known[slug]


@sensitive_variables()
def _apply(
    tiers: dict[str, dict[str, Any]],
    providers: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]],
    routes: list[dict[str, Any]],
    tenants: dict[str, dict[str, Any]],
    report: ConfigReport,
) -> None:
    tier_objs: dict[str, Tier] = {}
    for slug, values in tiers.items():
        tier = Tier.objects.filter(slug=slug).first() or Tier(slug=slug)
        _sync(tier, {**_TIER_DEFAULTS, **values}, report, f"tier {slug}")
        tier_objs[slug] = tier

    def tier_named(slug: str, where: str) -> Tier:
        return _named(Tier, tier_objs, slug, where)

    provider_objs: dict[str, Provider] = {}
    for slug, (values, keys) in providers.items():
        provider = Provider.objects.filter(slug=slug).first() or Provider(slug=slug)
        _sync(provider, {**_PROVIDER_DEFAULTS, **values}, report, f"provider {slug}")
        provider_objs[slug] = provider
        listed = set()
        for key_values in keys:
            label, secret = key_values["label"], key_values["secret"]
            listed.add(label)
            key = ProviderKey.objects.filter(provider=provider, label=label).first()
            wanted = {
                "weight": key_values.get("weight", 1),
                "enabled": key_values.get("enabled", True),
            }
            if key is None:
                key = ProviderKey(provider=provider, label=label)
                key.secret_ciphertext, key.last4 = keyring.seal(secret)
            elif not keyring.matches(key.secret_ciphertext, secret):
                key.secret_ciphertext, key.last4 = keyring.seal(secret)
                key.save(update_fields=["secret_ciphertext", "last4", "updated_at"])
                report.add(f"updated key {slug}/{label} (secret)")
            _sync(key, wanted, report, f"key {slug}/{label}")
        for stale in ProviderKey.objects.filter(provider=provider, enabled=True).exclude(
            label__in=listed
        ):
            _sync(stale, {"enabled": False}, report, f"key {slug}/{stale.label}")

    def provider_named(slug: str, where: str) -> Provider:
        return _named(Provider, provider_objs, slug, where)

    listed_routes: dict[int, set[int]] = {}
    for index, values in enumerate(routes):
        where = f"[[routes]] #{index + 1}"
        tier = tier_named(values["tier"], where)
        provider = provider_named(values["provider"], where)
        route = ModelRoute.objects.filter(
            tier=tier,
            model=values["model"],
            provider=provider,
            upstream_model=values["upstream_model"],
        ).first() or ModelRoute(
            tier=tier,
            model=values["model"],
            provider=provider,
            upstream_model=values["upstream_model"],
        )
        wanted = {
            "priority": values.get("priority", 0),
            "input_usd_per_mtok": values.get("input_usd_per_mtok", Decimal(0)),
            "output_usd_per_mtok": values.get("output_usd_per_mtok", Decimal(0)),
            "enabled": values.get("enabled", True),
        }
        label = f"route {tier.slug}:{values['model']} -> {provider.slug}/{values['upstream_model']}"
        _sync(route, wanted, report, label)
        listed_routes.setdefault(tier.pk, set()).add(route.pk)
    for tier_slug in tiers:
        tier = tier_objs[tier_slug]
        keep = listed_routes.get(tier.pk, set())
        for unlisted in ModelRoute.objects.filter(tier=tier, enabled=True).exclude(pk__in=keep):
            _sync(unlisted, {"enabled": False}, report, f"route {unlisted}")

    for slug, values in tenants.items():
        where = f"[tenants.{slug}]"
        values = dict(values, tier=tier_named(values["tier"], where))
        tenant = Tenant.objects.filter(slug=slug).first() or Tenant(slug=slug)
        _sync(tenant, values, report, f"tenant {slug}")
