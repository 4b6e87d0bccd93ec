"""Helpers the apps' admins share: their forms and actions write through the services."""

from __future__ import annotations

from typing import Any, TypeVar

from django import forms
from django.db import models

_M = TypeVar("_M", bound=models.Model)


def form_changes(form: forms.ModelForm[Any]) -> dict[str, Any]:
    """What a change form changed: the fields to hand to an update service."""
    return {name: form.cleaned_data[name] for name in form.changed_data}


def adopt(obj: _M, saved: _M) -> None:
    """The admin goes on with its own instance (to log the addition and redirect to it): give
    it what the create service saved, primary key and field defaults included."""
    for model_field in saved._meta.concrete_fields:
        setattr(obj, model_field.attname, getattr(saved, model_field.attname))
    obj._state.adding = False
    obj._state.db = saved._state.db
