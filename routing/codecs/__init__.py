"""Codecs: how the proxy speaks each client wire format and each provider kind.

``base`` is the interface the pipeline sees, ``model`` the internal model translations go
through, ``registry`` the client codecs (``OPENAI_CHAT``, ``ANTHROPIC_MESSAGES``) with the
provider codec each uses per provider kind. This package's own import stays empty so that a
codec module can be imported (and tested) on its own.
"""
