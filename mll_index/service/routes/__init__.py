"""The service's routers, one per resource (FastAPI's "bigger applications" layout); `create_app`
includes them in this order, which is the order of the paths in the OpenAPI document.

    health.py     GET /healthz, /readyz, /metrics
    index.py      GET /v1/index, /v1/models
    selection.py  POST /v1/select, /v1/select/batch
    match.py      POST /v1/match

Each route gets the app's shared pieces (holder, settings, pool, metrics) as dependencies
(`service.dependencies`), never from a closure.
"""
