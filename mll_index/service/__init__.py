"""The selection service: the index held open and warm behind an HTTP API (FastAPI + uvicorn).

    version.py   `index_version(path)`: a cheap fingerprint of what selection reads (stdlib only)
    state.py     the opened, warmed index (`IndexState`) and its holder, which swaps in new versions
    app.py       `create_app(index_path, ...)`: the ASGI app, its routes, limits, auth and metrics
    server.py    `serve(...)`: checks, then runs uvicorn (what `mll-index serve` calls)
    client.py    `select_remote(url, task, ...)`: a client on the standard library alone

Nothing here is imported by the package's other modules; importing this package imports
nothing heavy (the client path must start fast from a cold process).
"""
