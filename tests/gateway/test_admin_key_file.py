"""An admin key made outside the gateway (``admin_key_file``, a Kubernetes Secret) is registered and works."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from core.errors import InvalidInput, Unauthenticated
from core.ports import free_port
from gateway.auth import KeyScope, KeyStore
from gateway.auth.keys import PREFIX, with_keys
from gateway.database.engine import Database
from gateway.local import ADMIN_KEY_FILE, AdminKey, ensure_admin_key
from gateway.process import gateway_command, start_gateway_process
from gateway.registry import audit
from gateway.settings import GatewaySettings
from tests.conftest import close_any, open_any
from tests.gateway.conftest import verified

# As an operator makes one: 16 hex digits of id, 43 letters or digits of secret.
OPERATOR_KEY = f"{PREFIX}_0123456789abcdef_{'Ab1' * 14}Z"


def write_key(path: Path, key: str = OPERATOR_KEY) -> Path:
    path.write_text(key + "\n")  # as `kubectl create secret --from-file` keeps a trailing newline
    return path


async def test_a_registered_key_verifies_with_the_scopes_it_was_given(
    keys: KeyStore, database: Database
) -> None:
    record = await keys.register(OPERATOR_KEY, ["admin", "predict"], name="ops", actor="ops")
    assert record.id == "0123456789abcdef"
    assert await verified(keys, OPERATOR_KEY) == record
    assert record.scopes == {KeyScope.ADMIN, KeyScope.PREDICT}
    events = await database.read(audit.events)
    assert [(e.action, e.actor, e.details["key_id"]) for e in events] == [("key-create", "ops", record.id)]
    assert OPERATOR_KEY.split("_")[2] not in repr(events)


async def test_registering_a_key_again_changes_nothing(keys: KeyStore) -> None:
    first = await keys.register(OPERATOR_KEY, ["admin"])
    assert await keys.register(OPERATOR_KEY, ["admin", "predict"]) == first
    assert len(await keys.list()) == 1


async def test_processes_registering_the_same_key_at_once_make_it_once(
    keys: KeyStore, database: Database, database_url: str
) -> None:
    """As gateways starting together with the same admin key file do."""
    others = [await open_any(database_url) for _ in range(3)]
    stores = [KeyStore(other) for other in others]
    try:
        registering = (store.register(OPERATOR_KEY, ["admin"]) for store in [keys, *stores])
        records = await asyncio.gather(*registering)
        assert len(set(records)) == 1
        events = await database.read(audit.events)
        assert [e.action for e in events] == ["key-create"]
    finally:
        for store, other in zip(stores, others, strict=True):
            store.close()
            await close_any(other)


async def test_a_revoked_key_stays_revoked_when_registered_again(keys: KeyStore) -> None:
    await keys.register(OPERATOR_KEY, ["admin"])
    await keys.revoke("0123456789abcdef")
    assert (await keys.register(OPERATOR_KEY, ["admin"])).revoked_at is not None
    with pytest.raises(Unauthenticated, match="revoked"):
        await verified(keys, OPERATOR_KEY)


@pytest.mark.parametrize(
    "key",
    [
        "REPLACE-ME",
        f"{PREFIX}_0123456789abcdef_short",
        f"{PREFIX}_0123456789ABCDEF_{'a' * 43}",  # the id is lower-case hex
        f"{PREFIX}_0123456789abcdef_{'a' * 42}-",
    ],
)
async def test_a_malformed_key_is_refused_with_the_expected_format(key_store: KeyStore, key: str) -> None:
    with pytest.raises(InvalidInput, match=r"expected mdk_<16 hex digits>_<43 letters or digits>"):
        await key_store.register(key, ["admin"])
    assert await key_store.list() == []


async def test_a_key_whose_id_belongs_to_another_key_is_refused(keys: KeyStore) -> None:
    await keys.register(OPERATOR_KEY, ["admin"])
    other_secret = OPERATOR_KEY[:-1] + "Y"
    with pytest.raises(InvalidInput, match="belongs to another key"):
        await keys.register(other_secret, ["admin"])


def test_the_admin_key_file_is_registered_with_every_scope_and_none_is_made(
    tmp_path: Path, gateway_database: str | None
) -> None:
    settings = GatewaySettings(data_dir=tmp_path / "data", admin_key_file=write_key(tmp_path / "admin-key"))
    assert settings.database_url == gateway_database
    admin = ensure_admin_key(settings)
    assert (admin.value, admin.created) == (OPERATOR_KEY, False)
    assert ensure_admin_key(settings) == admin
    assert not (settings.data_dir / ADMIN_KEY_FILE).exists()

    async def check(store: KeyStore) -> None:
        assert (await verified(store, OPERATOR_KEY)).scopes == frozenset(KeyScope)
        assert len(await store.list()) == 1

    with_keys(settings, check)


def test_the_first_run_makes_an_admin_key_in_the_gateway_database(
    tmp_path: Path, gateway_database: str | None
) -> None:
    settings = GatewaySettings(data_dir=tmp_path / "data")
    admin = ensure_admin_key(settings)
    assert admin.created
    assert (settings.data_dir / ADMIN_KEY_FILE).read_text().strip() == admin.value
    assert ensure_admin_key(settings) == AdminKey(admin.value, created=False)

    async def scopes(store: KeyStore) -> frozenset[KeyScope]:
        return (await verified(store, admin.value)).scopes

    assert with_keys(settings, scopes) == frozenset(KeyScope)
    assert settings.database_path.exists() == (gateway_database is None)  # PostgreSQL: no SQLite file


def test_a_missing_or_malformed_admin_key_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    missing = GatewaySettings(data_dir=tmp_path / "data", admin_key_file=tmp_path / "nowhere")
    with pytest.raises(InvalidInput, match=f"cannot read the admin key file {tmp_path / 'nowhere'}"):
        ensure_admin_key(missing)
    placeholder = write_key(tmp_path / "admin-key", "REPLACE-ME")
    with pytest.raises(InvalidInput, match=f"admin key file {placeholder}: malformed API key"):
        ensure_admin_key(GatewaySettings(data_dir=tmp_path / "data", admin_key_file=placeholder))


def test_admin_key_file_is_read_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDEPLOY_ADMIN_KEY_FILE", str(tmp_path / "admin-key"))
    assert GatewaySettings().admin_key_file == tmp_path / "admin-key"


@pytest.mark.e2e
def test_a_gateway_started_with_the_admin_key_file_accepts_that_key(tmp_path: Path) -> None:
    env = {"MDEPLOY_ADMIN_KEY_FILE": str(write_key(tmp_path / "admin-key"))}
    # No inference server: key administration needs none.
    gateway = start_gateway_process(tmp_path / "data", [f"127.0.0.1:{free_port()}"], env=env)
    try:
        admin = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        answer = httpx.get(f"{gateway.url}/v1/admin/keys", headers=admin, timeout=10)
        assert answer.status_code == 200, answer.text
        assert [key["id"] for key in answer.json()["keys"]] == ["0123456789abcdef"]
        assert "admin API key (shown once" not in gateway.log
    finally:
        gateway.stop(timeout_s=10)


@pytest.mark.e2e
def test_a_gateway_refuses_to_start_with_a_placeholder_admin_key(tmp_path: Path) -> None:
    placeholder = write_key(tmp_path / "admin-key", "REPLACE-ME")
    command = [*gateway_command(), "serve", "--data-dir", str(tmp_path / "data"), "--port", "0"]
    command += ["--grpc-port", "0", "--backend", f"127.0.0.1:{free_port()}"]
    env = {**os.environ, "MDEPLOY_ADMIN_KEY_FILE": str(placeholder)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert f"admin key file {placeholder}: malformed API key" in done.stderr
