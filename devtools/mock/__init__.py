"""The mock LLM provider, in modules; its documentation is ``devtools.mockprovider``'s docstring.

base (wire types, constants, helpers) < config, tokens < plan < inspection and each wire format's
replies (openai, anthropic, responses) < app (``MockProvider``, the control API, ``build_app``).
The mock never imports Django.
"""
