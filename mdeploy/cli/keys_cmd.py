"""``mdeploy keys``: create, list and revoke API keys.

Locally on the gateway's database (how the first admin key is made): the data folder's, or
PostgreSQL when ``MDEPLOY_DATABASE_URL`` is set, as for the gateway; or through a gateway's admin
API when ``--gateway`` or ``MDEPLOY_GATEWAY`` is given. ``create`` prints the
new key alone on its last line: ``KEY=$(mdeploy keys create --scope predict | tail -1)``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from rich import box
from rich.markup import escape
from rich.table import Table

from core.errors import InvalidInput, NotFound
from mdeploy.cli.output import table_console
from mdeploy.client import ClientConfig, GatewayClient

if TYPE_CHECKING:
    from gateway.settings import GatewaySettings

KEYS_PATH = "/v1/admin/keys"
SCOPES = ("predict", "feedback", "admin")


class KeyBackend(Protocol):
    """Where keys live: the local database or a gateway's admin API; records as JSON objects."""

    def create(self, request: dict[str, Any]) -> dict[str, Any]: ...
    def list(self) -> list[dict[str, Any]]: ...
    def revoke(self, key_id: str) -> dict[str, Any]: ...


DESCRIPTION = """\
Create, list and revoke API keys.

Without --gateway (and MDEPLOY_GATEWAY) this works on the gateway's database directly (the data
folder's, or PostgreSQL at MDEPLOY_DATABASE_URL): that is how the first admin key is made. With
one, it goes through the gateway's admin API.
`create` prints the new key alone on its last line:

  KEY=$(mdeploy keys create --scope predict | tail -1)
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    where = _where_arguments()
    _register_create(commands, where)
    listing = commands.add_parser("list", parents=[where], help="list every key (never their secrets)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=run_list)
    revoke = commands.add_parser("revoke", parents=[where], help="revoke a key; it stops working at once")
    revoke.add_argument("key_id", metavar="ID", help="the key's id (see 'mdeploy keys list')")
    revoke.set_defaults(handler=run_revoke)


def _where_arguments() -> argparse.ArgumentParser:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--data-dir", type=Path, help="local mode: the gateway's data folder (MDEPLOY_DATA_DIR, .mdeploy)"
    )
    where.add_argument("--gateway", metavar="URL", help="remote mode: the gateway's URL (MDEPLOY_GATEWAY)")
    where.add_argument("--api-key", metavar="KEY", help="remote mode: an admin key (MDEPLOY_API_KEY)")
    return where


def _register_create(commands: Any, where: argparse.ArgumentParser) -> None:
    create = commands.add_parser(
        "create", parents=[where], help="create a key and print it (it is shown only once)"
    )
    create.add_argument(
        "--scope", action="append", required=True, choices=SCOPES, help="what the key may do (repeatable)"
    )
    create.add_argument("--models", metavar="M,...", help="models the key may use (default: all)")
    create.add_argument("--rate-limit", metavar="LIMIT", help="e.g. 100/minute (default: the scope's)")
    create.add_argument("--expires", metavar="WHEN", help="a date (2027-01-01) or a duration (30d, 12h)")
    create.add_argument("--name", default="", help="what the key is for, shown in 'keys list'")
    create.set_defaults(handler=run_create)


def run_create(args: argparse.Namespace) -> int:
    request = _create_request(args)
    with _backend(args) as backend:
        created = backend.create(request)
    _print_created(created)
    return 0


def run_list(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        records = backend.list()
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        _print_table(records)
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        record = backend.revoke(args.key_id)
    print(f"revoked API key {record['id']} at {record['revoked_at']}")
    return 0


def _create_request(args: argparse.Namespace) -> dict[str, Any]:
    # Checked here so that bad input fails the same way (exit 2) locally and remotely.
    # Imported here, as in LocalKeys.open: every command would otherwise pay for loading
    # the gateway (starlette, limits, redis) at start-up.
    from gateway.auth import parse_expiry, parse_rate_limit

    request: dict[str, Any] = {"scopes": args.scope, "name": args.name}
    if args.models is not None:
        request["models"] = [model.strip() for model in args.models.split(",") if model.strip()]
        if not request["models"]:
            raise InvalidInput("--models names no model; omit it to allow every model")
    if args.rate_limit is not None:
        parse_rate_limit(args.rate_limit)
        request["rate_limit"] = args.rate_limit
    if args.expires is not None:
        expires_at = parse_expiry(args.expires, datetime.now(UTC))
        if expires_at <= datetime.now(UTC):
            raise InvalidInput(f"--expires {args.expires} is in the past")
        request["expires_at"] = expires_at.isoformat()
    return request


@contextmanager
def _backend(args: argparse.Namespace) -> Iterator[KeyBackend]:
    remote = args.gateway or os.environ.get("MDEPLOY_GATEWAY")
    if remote and args.data_dir is not None:
        raise InvalidInput("--data-dir is for local mode; with a gateway URL the gateway's folder is used")
    if remote:
        with GatewayClient(ClientConfig.resolve(args.gateway, args.api_key)) as client:
            yield RemoteKeys(client)
        return
    local = LocalKeys.open(args.data_dir, create=args.handler is run_create)
    try:
        yield local
    finally:
        local.close()


class RemoteKeys:
    def __init__(self, client: GatewayClient) -> None:
        self._client = client

    def create(self, request: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self._client.post_json(KEYS_PATH, request)
        return created

    def list(self) -> list[dict[str, Any]]:
        listing: list[dict[str, Any]] = self._client.get_json(KEYS_PATH)["keys"]
        return listing

    def revoke(self, key_id: str) -> dict[str, Any]:
        revoked: dict[str, Any] = self._client.delete_json(f"{KEYS_PATH}/{quote(key_id, safe='')}")
        return revoked


class LocalKeys:
    """The gateway's database, as a gateway process would use it (opened for each command)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings

    @classmethod
    def open(cls, data_dir: Path | None, *, create: bool) -> LocalKeys:
        from gateway.settings import GatewaySettings

        settings = GatewaySettings(data_dir=data_dir) if data_dir is not None else GatewaySettings()
        path = settings.database_path
        if settings.database_url is None and not create and not path.exists():
            raise NotFound(
                f"no gateway database at {path}; pass --data-dir or set MDEPLOY_DATA_DIR"
                " (or --gateway URL for a remote gateway)"
            )
        return cls(settings)

    def create(self, request: dict[str, Any]) -> dict[str, Any]:
        from gateway.auth.keys import CreatedKeyInfo, with_keys

        expires = request.get("expires_at")
        created = with_keys(
            self._settings,
            lambda keys: keys.create(
                request["scopes"],
                models=request.get("models"),
                rate_limit=request.get("rate_limit"),
                expires_at=datetime.fromisoformat(expires) if expires else None,
                name=request["name"],
                actor=_local_actor(),
            ),
        )
        info = created.record.info(datetime.now(UTC))
        return CreatedKeyInfo(**dict(info), key=created.key).model_dump(mode="json")

    def list(self) -> list[dict[str, Any]]:
        from gateway.auth.keys import with_keys

        now = datetime.now(UTC)
        records = with_keys(self._settings, lambda keys: keys.list())
        return [record.info(now).model_dump(mode="json") for record in records]

    def revoke(self, key_id: str) -> dict[str, Any]:
        from gateway.auth.keys import with_keys

        revoked = with_keys(self._settings, lambda keys: keys.revoke(key_id, actor=_local_actor()))
        return revoked.info(datetime.now(UTC)).model_dump(mode="json")

    def close(self) -> None:
        pass  # each command opened and closed the database


def _local_actor() -> str:
    """Who changes keys straight in the database: the local user (the audit log's actor)."""
    return f"local:{getpass.getuser()}"


def _print_created(created: dict[str, Any]) -> None:
    name = f" ({created['name']})" if created["name"] else ""
    print(f"created API key {created['id']}{name}")
    print(f"  scopes:     {', '.join(created['scopes'])}")
    print(f"  models:     {', '.join(created['models']) if created['models'] else 'all'}")
    print(f"  rate limit: {created['rate_limit'] or 'the default of each scope'}")
    print(f"  expires:    {created['expires_at'] or 'never'}")
    print("store the key now, it is not shown again:")
    print(created["key"])


def _print_table(records: list[dict[str, Any]]) -> None:
    # Piped output (grep, less) gets whole rows rather than rows wrapped at 80 columns.
    console = table_console()
    if not records:
        console.print("no API keys; create one with 'mdeploy keys create --scope ...'")
        return
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True)
    for column in ("name", "scopes", "models", "rate limit", "expires", "status"):
        table.add_column(column, overflow="fold")
    for record in records:
        table.add_row(*(escape(cell) for cell in _row(record)))
    console.print(table)


def _row(record: dict[str, Any]) -> tuple[str, ...]:
    expires = record["expires_at"]
    return (
        record["id"],
        record["name"] or "-",
        ", ".join(record["scopes"]),
        ", ".join(record["models"]) if record["models"] else "all",
        record["rate_limit"] or "default",
        f"{expires[:10]} {expires[11:16]}" if expires else "never",
        record["status"],
    )
