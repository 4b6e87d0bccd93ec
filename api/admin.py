"""Staff API tokens in the admin: made here (the token is shown once, on the page after the
save), revoked here (an action, and a field on the change page); never edited or deleted,
so the audit trail keeps naming them."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from api import services
from api.models import ApiToken

_CREATED = "_api_token_created"


class ApiTokenForm(forms.ModelForm[ApiToken]):
    class Meta:
        model = ApiToken
        fields = ("name", "scopes")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin[ApiToken]):
    form = ApiTokenForm
    list_display = (
        "name",
        "scopes",
        "prefix",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = ("scopes",)
    search_fields = ("name",)
    actions = ["revoke"]
    readonly_fields = ("prefix", "created_by", "created_at", "last_used_at", "revoked_at")

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> Any:
        # Once made, a token's name and scopes stay as they were (its audit rows name it);
        # a token with other scopes is a new token.
        if obj is not None:
            return ("name", "scopes", *self.readonly_fields)
        return ()

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: ApiToken, form: forms.ModelForm[ApiToken], change: bool
    ) -> None:
        if change:
            return  # nothing on the change page is editable
        user = request.user if isinstance(request.user, User) else None
        created = services.api_token_create(
            name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"], created_by=user
        )
        obj.pk = created.record.pk
        obj.prefix, obj.token_hash = created.record.prefix, created.record.token_hash
        obj._state.adding = False
        # For response_add, in this request only: never in a message (messages go into a
        # cookie or the session), never stored.
        setattr(request, _CREATED, created.token)

    def response_add(
        self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        token = getattr(request, _CREATED, None)
        if token is None:
            return super().response_add(request, obj, post_url_continue)
        self.log_addition(request, obj, [{"added": {}}])
        context = {
            **self.admin_site.each_context(request),
            "title": f"API token {obj.name}",
            "opts": self.opts,
            "token": token,
            "record": obj,
        }
        response = render(request, "admin/api/apitoken/created.html", context)
        # The page holds a live credential: no browser or proxy cache keeps it.
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected API tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset:
            services.api_token_revoke(token=token)
        self.message_user(request, f"{queryset.count()} API token(s) revoked.", messages.SUCCESS)
