"""The runner's HTTP surface: the data plane (routes every request to a
function), the admin plane (health, readiness, metrics, introspection),
problem+json errors and the guard against hostile clients.

The request path starts in :mod:`.dataplane`.
"""
