"""`gcl-server`: migrate the database, write or check the OpenAPI document, serve under gunicorn."""

import argparse
import json
import os
import sys

from . import create_app
from .migrations import migrate_url
from .settings import load
from .version import VERSION


def _openapi_text():
    # No database is opened: create_app only names it, and the document is built from the routes alone. It
    # describes a server with API keys (a bearer key required wherever a scope is declared); a server without keys
    # serves its own document, where the key is optional.
    app = create_app({"DATABASE_URL": "sqlite:///never-opened.db", "API_KEYS": "documented-with-keys"})
    with app.app_context():
        spec = app.extensions["flask-smorest"]["apis"][""]["ext_obj"].spec.to_dict()
    return json.dumps(spec, indent=2, sort_keys=True) + "\n"


def cmd_migrate(args):
    url = load()["DATABASE_URL"]
    applied = migrate_url(url)
    print(f"migrations applied: {applied or 'none (up to date)'}")
    return 0


def cmd_openapi(args):
    text = _openapi_text()
    if args.check:
        try:
            with open(args.check) as handle:
                current = handle.read()
        except FileNotFoundError:
            current = ""
        if current != text:
            print(f"{args.check} is stale: run `make openapi` and commit it", file=sys.stderr)
            return 1
        print(f"{args.check} is up to date")
        return 0
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_serve(args):
    conf = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serving", "gunicorn_conf.py")
    # This interpreter's gunicorn, not whichever is first on PATH (or none: a venv used without activating it).
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "-c", conf])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gcl-server", description="GCL control plane")
    parser.add_argument("--version", action="version", version=f"gcl-server {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply pending schema migrations to DATABASE_URL").set_defaults(fn=cmd_migrate)
    openapi = sub.add_parser("openapi", help="print, write or check the OpenAPI document")
    openapi.add_argument("--output", "-o", help="write to this file")
    openapi.add_argument("--check", metavar="FILE", help="exit 1 if FILE differs from the current spec")
    openapi.set_defaults(fn=cmd_openapi)
    sub.add_parser("serve", help="run under gunicorn (GCL_HOST, GCL_PORT, GCL_WORKERS)").set_defaults(fn=cmd_serve)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except Exception as exc:  # one line, never a traceback, for operators
        print(f"gcl-server: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
