from __future__ import annotations

from django.urls import path

from routing import views

urlpatterns = [
    path("v1/chat/completions", views.chat_completions, name="chat-completions"),
    path("v1/models", views.list_models, name="models"),
]
