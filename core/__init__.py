"""The neutral bottom layer: errors, the Redis and HTTP clients, single-flight, env helpers.

Nothing here imports a domain app (tenants, routing, usage); they all import from here.
"""
