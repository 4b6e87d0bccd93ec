"""Development tools: the built-in mock LLM provider and the quickstart.

An app of its own, above the domain apps: nothing in the proxy imports it, and a production
deployment may leave it out of INSTALLED_APPS (its commands are then simply absent).
"""
