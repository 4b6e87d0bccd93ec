from __future__ import annotations


def chat_completions(request):  # placeholder until the hot path lands
    raise NotImplementedError


list_models = chat_completions
