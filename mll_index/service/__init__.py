"""The selection service: the index held open and warm behind an HTTP API (FastAPI + uvicorn).

    version.py   `index_version(path)`: a cheap fingerprint of what selection reads (stdlib only)
    state.py     the opened, warmed index (`IndexState`) and its holder, which swaps in new versions
    app.py       `create_app(index_path, ...)`: the ASGI app factory; its pieces (settings, schemas,
                 errors, middleware, metrics, pool, dependencies, tasks, routes/) are its neighbours
    server.py    `serve(...)`: checks, then runs uvicorn (what `mll-index serve` calls)
    client.py    `select_remote(url, task, ...)`: a client on the standard library alone

Nothing below the CLI imports this package; importing it imports nothing heavy, since the names
below load their module on first use (the client path must start fast from a cold process).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "app": ["create_app"],
    "client": ["select_remote"],
    "server": ["serve"],
    "settings": ["ServiceSettings"],
    "version": ["index_version"],
})
