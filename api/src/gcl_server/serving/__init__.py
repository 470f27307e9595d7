"""The serving layer: gunicorn's settings and hooks, its worker, the connection guards and the lean HTTP path.

Everything gunicorn-specific lives here, and the processes and threads start here (create_app has no side effects).
Nothing below imports this package (the `serving-on-top` import contract); its one switch is GCL_LEAN_HTTP.
"""
