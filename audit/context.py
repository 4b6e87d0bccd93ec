"""Who is acting: the actor every audit row names.

One context variable holds it, so it follows a request or a command into everything it calls
(services, model signals, ``sync_to_async`` threads: asgiref copies the context) without any
service taking a ``by=`` argument. Three things set it:

- ``audit.middleware.audit_actor_middleware``, for every admin/console request: the request's
  user, looked up lazily (only when a row is written, in the thread of the save, so an async
  view never makes a sync DB call on the event loop just to name its user);
- the management-command wrapper installed by ``AuditConfig.ready()``: ``command:<name>`` for
  every ``manage.py`` command and ``call_command()`` (the outermost command wins, so a command
  that calls another is named as the one the operator ran);
- ``acting_as(...)``, explicitly, anywhere (``api:<credential>``, a console action, a test).

With none of them, the actor is ``system`` (the proxy itself, e.g. a key it switched off).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest


@dataclass(frozen=True)
class Actor:
    """``name`` is a username, ``command:<name>``, ``api:<credential>`` or ``system``."""

    name: str
    user_id: int | None = None


SYSTEM = Actor("system")
ANONYMOUS = Actor("anonymous")

# A value, or a callable resolving it lazily (a request's user).
_actor: ContextVar[Actor | Callable[[], Actor] | None] = ContextVar("audit_actor", default=None)


def actor_for_user(user: AbstractBaseUser | AnonymousUser | None) -> Actor:
    if user is None or not user.is_authenticated:
        return ANONYMOUS
    pk = user.pk
    return Actor(user.get_username(), pk if isinstance(pk, int) else None)


def current_actor() -> Actor:
    value = _actor.get()
    if value is None:
        return SYSTEM
    return value() if callable(value) else value


def _as_actor(actor: str | Actor | AbstractBaseUser) -> Actor:
    if isinstance(actor, Actor):
        return actor
    if isinstance(actor, str):
        if not actor.strip():
            raise ValueError("An actor needs a name.")
        return Actor(actor)
    return actor_for_user(actor)


@contextmanager
def acting_as(actor: str | Actor | AbstractBaseUser) -> Iterator[Actor]:
    """Name who acts for the duration: a string (``api:platform``), an Actor or a user.

    Explicit, so it wins over the request's user and the command name around it.
    """
    resolved = _as_actor(actor)
    token = _actor.set(resolved)
    try:
        yield resolved
    finally:
        _actor.reset(token)


def bind_request(request: HttpRequest) -> Token[Actor | Callable[[], Actor] | None]:
    """The request's user acts (looked up when first needed). Reset with ``unbind``."""

    @functools.cache
    def resolve() -> Actor:
        return actor_for_user(getattr(request, "user", None))

    return _actor.set(resolve)


def unbind(token: Token[Actor | Callable[[], Actor] | None]) -> None:
    _actor.reset(token)


def install_command_actor() -> None:
    """Every management command acts as ``command:<name>`` unless an actor is already set.

    BaseCommand.execute is the one method every command goes through, from ``manage.py`` and
    from ``call_command`` alike; wrapping it (once) covers Django's commands (``shell``,
    ``loaddata``) as well as ours, with nothing for each command to remember.
    """
    from django.core.management.base import BaseCommand

    original = BaseCommand.execute
    if getattr(original, "_audit_actor", False):
        return

    @functools.wraps(original)
    def execute(self: BaseCommand, *args: Any, **options: Any) -> Any:
        if _actor.get() is not None:
            return original(self, *args, **options)
        name = type(self).__module__.rpartition(".")[2]
        with acting_as(f"command:{name}"):
            return original(self, *args, **options)

    execute._audit_actor = True  # type: ignore[attr-defined]
    BaseCommand.execute = execute  # type: ignore[method-assign]
