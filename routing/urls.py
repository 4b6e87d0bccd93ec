from __future__ import annotations

from django.urls import path

from routing import views

urlpatterns = [
    path("v1/chat/completions", views.chat_completions, name="chat-completions"),
    path("v1/messages", views.messages, name="messages"),
    path("v1/messages/count_tokens", views.count_tokens, name="count-tokens"),
    path("v1/responses", views.responses, name="responses"),
    path("v1/responses/<str:response_id>", views.stored_response, name="stored-response"),
    path("v1/responses/<str:response_id>/<path:rest>", views.stored_response),
    path("v1/models", views.list_models, name="models"),
    # Last: whatever else is under /v1/ is an unknown API path, answered in JSON.
    path("v1/", views.unknown_path),
    path("v1/<path:rest>", views.unknown_path, name="unknown-api-path"),
]
