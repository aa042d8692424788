"""An admin key made outside the gateway (``admin_key_file``, a Kubernetes Secret) is registered and works."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from core.errors import InvalidInput, Unauthenticated
from core.ports import free_port
from gateway.auth import KeyScope, KeyStore
from gateway.auth.keys import PREFIX
from gateway.db import open_database
from gateway.local import ADMIN_KEY_FILE, ensure_admin_key
from gateway.process import gateway_command, start_gateway_process
from gateway.registry import audit
from gateway.settings import GatewaySettings

# As an operator makes one: 16 hex digits of id, 43 letters or digits of secret.
OPERATOR_KEY = f"{PREFIX}_0123456789abcdef_{'Ab1' * 14}Z"


def write_key(path: Path, key: str = OPERATOR_KEY) -> Path:
    path.write_text(key + "\n")  # as `kubectl create secret --from-file` keeps a trailing newline
    return path


def test_a_registered_key_verifies_with_the_scopes_it_was_given(key_store: KeyStore) -> None:
    record = key_store.register(OPERATOR_KEY, ["admin", "predict"], name="ops", actor="ops")
    assert record.id == "0123456789abcdef"
    assert key_store.verify(OPERATOR_KEY) == record
    assert record.scopes == {KeyScope.ADMIN, KeyScope.PREDICT}
    events = audit.events(key_store._db)  # the store's own connection: one database
    assert [(e.action, e.actor, e.details["key_id"]) for e in events] == [("key-create", "ops", record.id)]
    assert OPERATOR_KEY.split("_")[2] not in repr(events)


def test_registering_a_key_again_changes_nothing(key_store: KeyStore) -> None:
    first = key_store.register(OPERATOR_KEY, ["admin"])
    assert key_store.register(OPERATOR_KEY, ["admin", "predict"]) == first
    assert len(key_store.list()) == 1


def test_a_revoked_key_stays_revoked_when_registered_again(key_store: KeyStore) -> None:
    key_store.register(OPERATOR_KEY, ["admin"])
    key_store.revoke("0123456789abcdef")
    assert key_store.register(OPERATOR_KEY, ["admin"]).revoked_at is not None
    with pytest.raises(Unauthenticated, match="revoked"):
        key_store.verify(OPERATOR_KEY)


@pytest.mark.parametrize(
    "key",
    [
        "REPLACE-ME",
        f"{PREFIX}_0123456789abcdef_short",
        f"{PREFIX}_0123456789ABCDEF_{'a' * 43}",  # the id is lower-case hex
        f"{PREFIX}_0123456789abcdef_{'a' * 42}-",
    ],
)
def test_a_malformed_key_is_refused_with_the_expected_format(key_store: KeyStore, key: str) -> None:
    with pytest.raises(InvalidInput, match=r"expected mdk_<16 hex digits>_<43 letters or digits>"):
        key_store.register(key, ["admin"])
    assert key_store.list() == []


def test_a_key_whose_id_belongs_to_another_key_is_refused(key_store: KeyStore) -> None:
    key_store.register(OPERATOR_KEY, ["admin"])
    other_secret = OPERATOR_KEY[:-1] + "Y"
    with pytest.raises(InvalidInput, match="belongs to another key"):
        key_store.register(other_secret, ["admin"])


def test_the_admin_key_file_is_registered_with_every_scope_and_none_is_made(tmp_path: Path) -> None:
    settings = GatewaySettings(data_dir=tmp_path / "data", admin_key_file=write_key(tmp_path / "admin-key"))
    admin = ensure_admin_key(settings)
    assert (admin.value, admin.created) == (OPERATOR_KEY, False)
    assert ensure_admin_key(settings) == admin
    assert not (settings.data_dir / ADMIN_KEY_FILE).exists()
    connection = open_database(settings.database_path)
    try:
        store = KeyStore(connection)
        assert store.verify(OPERATOR_KEY).scopes == frozenset(KeyScope)
        assert len(store.list()) == 1
    finally:
        connection.close()


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
