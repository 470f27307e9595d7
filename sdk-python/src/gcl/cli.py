"""The ``gcl`` command line: manage limits and inspect leases (a thin shell over ``gcl.Client``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any, NoReturn

from gcl._wire import Lease, Limit
from gcl.client import Client
from gcl.errors import GCLError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: error: {message}\n")


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _print_limits(limits: list[Limit], output: str) -> None:
    if output == "json":
        print(json.dumps([lim.to_json() for lim in limits], indent=2))
        return
    rows = [
        (lim.name, lim.active, lim.limit, lim.active_slots, lim.slot_decay_per_second, _when(lim.updated))
        for lim in limits
    ]
    print(_table(("NAME", "ACTIVE", "LIMIT", "ACTIVE SLOTS", "DECAY/S", "UPDATED"), rows))


def _print_limit(lim: Limit, output: str) -> None:
    if output == "json":
        print(json.dumps(lim.to_json(), indent=2))
        return
    data = lim.to_json()
    width = max(map(len, data))
    print("\n".join(f"{key.ljust(width)}  {value}" for key, value in data.items()))


def _print_leases(leases: list[Lease], output: str) -> None:
    if output == "json":
        print(json.dumps([lease.to_json() for lease in leases], indent=2))
        return
    rows = [
        (
            lease.lease_id,
            lease.slots,
            f"{(lease.holder or {}).get('type', '-')}:{(lease.holder or {}).get('id', '-')}",
            _when(lease.acquired),
            _when(lease.expires),
            lease.fencing_token,
        )
        for lease in leases
    ]
    print(_table(("LEASE", "SLOTS", "HOLDER", "ACQUIRED", "EXPIRES", "TOKEN"), rows))


def _print_history(records: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        print(json.dumps(records, indent=2))
        return
    rows = []
    for record in records:
        detail = record.get("detail") or {}
        change = ""
        if "before" in detail or "after" in detail:
            before, after = detail.get("before") or {}, detail.get("after") or {}
            change = ", ".join(
                f"{key}: {before.get(key, '-')} -> {after.get(key, '-')}"
                for key in sorted(set(before) | set(after))
                if before.get(key) != after.get(key)
            )
        elif record.get("lease_id"):
            change = f"lease {record['lease_id']} ({record.get('slots')} slots)"
        rows.append((record["at"], record["kind"], record.get("actor") or "-", change))
    print(_table(("AT", "KIND", "ACTOR", "CHANGE"), rows))


def _confirm(question: str) -> bool:
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _run(args: argparse.Namespace, client: Client) -> int:
    cmd, out = args.command, getattr(args, "output", "table")
    if cmd == "ls":
        _print_limits(client.list(), out)
    elif cmd == "inspect":
        _print_limit(client.read(args.name), out)
    elif cmd == "create":
        lim = client.create(
            args.name, args.limit, active=not args.disable, slot_decay_per_second=args.slot_decay_per_second
        )
        _print_limit(lim, out)
    elif cmd == "update":
        if args.limit is None and args.slot_decay_per_second is None and args.active is None:
            args.parser.error("nothing to update: give --limit, --slot-decay-per-second, --enable or --disable")
        client.update(args.name, limit=args.limit, slot_decay_per_second=args.slot_decay_per_second, active=args.active)
        _print_limit(client.read(args.name), out)
    elif cmd in ("enable", "disable"):
        client.update(args.name, active=cmd == "enable")
        print(f"Limit {args.name!r} {cmd}d.")
    elif cmd == "delete":
        if not args.yes and sys.stdin.isatty() and not _confirm(f"Delete limit {args.name!r}?"):
            print("Aborted.", file=sys.stderr)
            return 1
        client.delete(args.name)
        print(f"Limit {args.name!r} deleted.")
    elif cmd == "reset":
        lim = client.reset(args.name)
        print(f"Limit {lim.name!r} reset.")
    elif cmd == "leases":
        _print_leases(client.leases(args.name), out)
    elif cmd == "history":
        _print_history(client.history(args.name, limit=args.limit), out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gcl", description="Manage GCL global concurrency and rate limits.")
    parser.add_argument("--version", action="version", version=f"gcl {version('gcl')}")
    parser.add_argument("--api-url", help="control plane URL (env GCL_API_URL; default http://127.0.0.1:4280/api)")
    parser.add_argument("--api-key", help="API key (env GCL_API_KEY)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_: str, *, output: bool = False, named: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(parser=p)
        if named:
            p.add_argument("name", metavar="NAME", help="limit name (or id)")
        if output:
            p.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")
        return p

    command("ls", "List every limit (all pages).", output=True, named=False)
    command("inspect", "Show one limit.", output=True)
    create = command("create", "Create a limit.", output=True)
    create.add_argument("-l", "--limit", type=int, required=True, help="number of slots")
    create.add_argument("--slot-decay-per-second", type=float, default=0.0, help="rate-limit decay (default 0)")
    create.add_argument("--disable", action="store_true", help="create it inactive")
    update = command("update", "Change a limit.", output=True)
    update.add_argument("-l", "--limit", type=int, help="number of slots")
    update.add_argument("--slot-decay-per-second", type=float, help="rate-limit decay")
    toggle = update.add_mutually_exclusive_group()
    toggle.add_argument("--enable", dest="active", action="store_const", const=True, help="make it active")
    toggle.add_argument("--disable", dest="active", action="store_const", const=False, help="make it inactive")
    command("enable", "Activate a limit.")
    command("disable", "Deactivate a limit (it admits everyone).")
    delete = command("delete", "Delete a limit (asks for confirmation on a terminal).")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask")
    command("reset", "Revoke every lease of a limit and clear its counters.")
    command("leases", "List a limit's live leases.", output=True)
    history = command("history", "Show who changed a limit, reset it or revoked its leases, newest first.", output=True)
    history.add_argument("-n", "--limit", type=int, default=20, help="how many records (default 20)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with Client(args.api_url, args.api_key) as client:
            return _run(args, client)
    except GCLError as exc:
        print(f"Error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
    except BrokenPipeError:
        sys.stderr.close()
    return 1


if __name__ == "__main__":
    sys.exit(main())
