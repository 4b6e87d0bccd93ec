"""Declarative configuration: a TOML file describes tiers, providers, keys, routes, model
aliases and tenants.

Applying a file makes the database match it and reports what changed; applying the same
file again changes nothing. Everything is validated before anything is written, and the
writes happen in one transaction, so a bad file leaves the database as it was.

What "declarative" covers: every object the file names is created or updated to match.
Pooled keys of a provider the file names, and routes of a tier the file names, that the
file does not list are disabled (not deleted: the ledger still points at them); aliases of a
named tier that the file does not list are deleted. Tenants the
file does not name are left alone, since platforms usually create those through the admin.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.views.decorators.debug import sensitive_variables

from routing import keyring, services
from routing.models import ModelAlias, ModelRoute, Provider, ProviderKey
from tenants import services as tenant_services
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
    "alert_thresholds": str,
    "downgrade_model": str,
    "downgrade_at_percent": int,
}
_PROVIDER_FIELDS = {
    "kind": str,
    "base_url": str,
    "connect_timeout": float,
    "first_byte_timeout": float,
    "idle_timeout": float,
    "total_timeout": float,
    "enabled": bool,
    "responses_api": bool,
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
    "cache_read_usd_per_mtok": Decimal,
    "cache_write_usd_per_mtok": Decimal,
    "enabled": bool,
}
_ALIAS_FIELDS = {"tier": str, "name": str, "model": str}
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


def _defaults(model: type[models.Model], names: Iterable[str]) -> dict[str, Any]:
    """The model fields' defaults: what a field the file leaves out goes back to."""
    defaults: dict[str, Any] = {}
    for name in names:
        model_field = model._meta.get_field(name)
        assert isinstance(model_field, models.Field)
        defaults[name] = model_field.get_default()
    return defaults


def _diff(obj: models.Model, values: dict[str, Any]) -> dict[str, Any]:
    """The values that differ from what ``obj`` holds."""
    return {name: value for name, value in values.items() if getattr(obj, name) != value}


@contextmanager
def _checked(label: str) -> Iterator[None]:
    """A service's validation error, as a ConfigError naming the object."""
    try:
        yield
    except ValidationError as exc:
        details = "; ".join(f"{k}: {', '.join(v)}" for k, v in exc.message_dict.items())
        raise ConfigError(f"{label}: {details}") from None


def _updated(report: ConfigReport, label: str, changed: list[str]) -> None:
    report.add(f"updated {label} ({', '.join(changed)})")


@sensitive_variables()  # the environment and the provider keys read from it
def config_apply(
    *, data: dict[str, Any], environ: Mapping[str, str], dry_run: bool = False
) -> ConfigReport:
    """Make the database match ``data``; returns what changed.

    ``dry_run`` runs the very same validation and writes, then rolls the transaction back:
    the report says what a real run would change (line for line, since it is the same
    code), and nothing stays: no row, no audit row written in the transaction, and no
    change announced, since announcements and the key-health clean-up wait for a commit
    (transaction.on_commit) and a rollback discards them.
    """
    unknown = sorted(set(data) - {"tiers", "providers", "routes", "aliases", "tenants"})
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
    raw_aliases = data.get("aliases", [])
    if not isinstance(raw_aliases, list):
        raise ConfigError("[[aliases]] must be an array of tables.")
    aliases = [
        _fields(f"[[aliases]] #{index + 1}", spec, _ALIAS_FIELDS, ("tier", "name", "model"))
        for index, spec in enumerate(raw_aliases)
    ]
    tenants = {
        slug: _fields(f"[tenants.{slug}]", spec, _TENANT_FIELDS, ("name", "tier"))
        for slug, spec in _table(data, "tenants").items()
    }

    report = ConfigReport()
    with transaction.atomic():
        _apply(tiers, providers, routes, aliases, tenants, report)
        if dry_run:
            transaction.set_rollback(True)
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
    aliases: list[dict[str, Any]],
    tenants: dict[str, dict[str, Any]],
    report: ConfigReport,
) -> None:
    # A field a tier, provider, key or route leaves out goes back to its default, so deleting
    # a line from the file (a cap, say) really removes it. Tenants are different: staff
    # suspend them in the admin, and re-applying the file must not quietly undo that.
    tier_defaults = _defaults(Tier, [name for name in _TIER_FIELDS if name != "name"])
    provider_defaults = _defaults(
        Provider, [name for name in _PROVIDER_FIELDS if name not in ("kind", "base_url")]
    )
    key_defaults = _defaults(ProviderKey, ["weight", "enabled"])
    route_defaults = _defaults(
        ModelRoute,
        [
            name
            for name in _ROUTE_FIELDS
            if name not in ("tier", "model", "provider", "upstream_model")
        ],
    )

    tier_objs: dict[str, Tier] = {}
    for slug, values in tiers.items():
        label, wanted = f"tier {slug}", {**tier_defaults, **values}
        tier = Tier.objects.filter(slug=slug).first()
        with _checked(label):
            if tier is None:
                tier = tenant_services.tier_create(slug=slug, **wanted)
                report.add(f"created {label}")
            elif changes := _diff(tier, wanted):
                tenant_services.tier_update(tier=tier, **changes)
                _updated(report, label, list(changes))
        tier_objs[slug] = tier

    def tier_named(slug: str, where: str) -> Tier:
        return _named(Tier, tier_objs, slug, where)

    provider_objs: dict[str, Provider] = {}
    for slug, (values, keys) in providers.items():
        label, wanted = f"provider {slug}", {**provider_defaults, **values}
        provider = Provider.objects.filter(slug=slug).first()
        with _checked(label):
            if provider is None:
                provider = services.provider_create(slug=slug, **wanted)
                report.add(f"created {label}")
            elif changes := _diff(provider, wanted):
                services.provider_update(provider=provider, **changes)
                _updated(report, label, list(changes))
        provider_objs[slug] = provider
        listed = set()
        for key_values in keys:
            key_label, secret = key_values["label"], key_values["secret"]
            listed.add(key_label)
            label = f"key {slug}/{key_label}"
            wanted = {**key_defaults, **{n: key_values[n] for n in key_defaults if n in key_values}}
            key = ProviderKey.objects.filter(provider=provider, label=key_label).first()
            with _checked(label):
                if key is None:
                    services.provider_key_create(
                        provider=provider, label=key_label, secret=secret, **wanted
                    )
                    report.add(f"created {label}")
                    continue
                changes = _diff(key, wanted)
                new_secret = not keyring.matches(key.secret_ciphertext, secret)
                if changes or new_secret:
                    services.provider_key_update(
                        key=key, secret=secret if new_secret else None, **changes
                    )
                    _updated(report, label, ["secret", *changes] if new_secret else list(changes))
        for stale in ProviderKey.objects.filter(provider=provider, enabled=True).exclude(
            label__in=listed
        ):
            services.provider_key_disable(key=stale)
            _updated(report, f"key {slug}/{stale.label}", ["enabled"])

    def provider_named(slug: str, where: str) -> Provider:
        return _named(Provider, provider_objs, slug, where)

    listed_routes: dict[int, set[int]] = {}
    for index, values in enumerate(routes):
        where = f"[[routes]] #{index + 1}"
        tier = tier_named(values["tier"], where)
        provider = provider_named(values["provider"], where)
        target = {
            "tier": tier,
            "model": values["model"],
            "provider": provider,
            "upstream_model": values["upstream_model"],
        }
        wanted = {**route_defaults, **{n: values[n] for n in route_defaults if n in values}}
        label = f"route {tier.slug}:{values['model']} -> {provider.slug}/{values['upstream_model']}"
        route = ModelRoute.objects.filter(**target).first()
        with _checked(label):
            if route is None:
                route = services.route_create(**target, **wanted)
                report.add(f"created {label}")
            elif changes := _diff(route, wanted):
                services.route_update(route=route, **changes)
                _updated(report, label, list(changes))
        listed_routes.setdefault(tier.pk, set()).add(route.pk)
    for tier_slug in tiers:
        tier = tier_objs[tier_slug]
        keep = listed_routes.get(tier.pk, set())
        for unlisted in ModelRoute.objects.filter(tier=tier, enabled=True).exclude(pk__in=keep):
            services.route_update(route=unlisted, enabled=False)
            _updated(report, f"route {unlisted}", ["enabled"])

    # Aliases hold nothing the ledger points at: one a named tier no longer lists is deleted.
    listed_aliases: dict[int, set[int]] = {}
    for index, values in enumerate(aliases):
        where = f"[[aliases]] #{index + 1}"
        tier = tier_named(values["tier"], where)
        label = f"alias {tier.slug}:{values['name']} -> {values['model']}"
        alias = ModelAlias.objects.filter(tier=tier, name=values["name"]).first()
        with _checked(label):
            if alias is None:
                alias = services.alias_create(tier=tier, name=values["name"], model=values["model"])
                report.add(f"created {label}")
            elif alias.model != values["model"]:
                services.alias_update(alias=alias, model=values["model"])
                _updated(report, label, ["model"])
        listed_aliases.setdefault(tier.pk, set()).add(alias.pk)
    for tier_slug in tiers:
        tier = tier_objs[tier_slug]
        keep = listed_aliases.get(tier.pk, set())
        for unlisted_alias in ModelAlias.objects.filter(tier=tier).exclude(pk__in=keep):
            services.alias_delete(alias=unlisted_alias)
            report.add(f"deleted alias {unlisted_alias}")

    for slug, values in tenants.items():
        where, label = f"[tenants.{slug}]", f"tenant {slug}"
        wanted = dict(values, tier=tier_named(values["tier"], where))
        tenant = Tenant.objects.filter(slug=slug).first()
        with _checked(label):
            if tenant is None:
                tenant_services.tenant_create(slug=slug, **wanted)
                report.add(f"created {label}")
            elif changes := _diff(tenant, wanted):
                tenant_services.tenant_update(tenant=tenant, **changes)
                _updated(report, label, list(changes))
