"""``mdeploy keys`` locally on a data folder and remotely through a real gateway process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.auth.keys import with_keys
from gateway.settings import GatewaySettings
from mdeploy.cli import main
from tests.gateway.conftest import LiveGateway, verified

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def no_gateway_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("MDEPLOY_GATEWAY", "MDEPLOY_API_KEY", "MDEPLOY_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MDEPLOY_CONFIG", str(tmp_path / "no-config.toml"))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["keys", *args])
    out, err = capsys.readouterr()
    return code, out, err


def verify(data_dir: Path, key: str) -> str:
    """The key's id, verified as a gateway on ``data_dir`` (and MDEPLOY_DATABASE_URL) would."""
    return with_keys(GatewaySettings(data_dir=data_dir), lambda keys: verified(keys, key)).id


def test_create_prints_the_key_alone_on_its_last_line(tmp_path: Path) -> None:
    mdeploy = Path(sys.executable).parent / "mdeploy"
    script = f'KEY=$("{mdeploy}" keys create --data-dir "{tmp_path}" --scope admin | tail -1); echo "$KEY"'
    key = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    assert key.startswith("mdk_")
    assert verify(tmp_path, key) == key.split("_")[1]


def test_local_create_list_and_revoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gateway_database: str | None
) -> None:
    """On the data folder's SQLite, then on PostgreSQL (MDEPLOY_DATABASE_URL, as the gateway reads it)."""
    where = ["--data-dir", str(tmp_path)]
    code, out, _ = run(
        capsys, "create", *where, "--scope", "predict", "--scope", "feedback", "--models", "iris, digits",
        "--rate-limit", "100/minute", "--expires", "30d", "--name", "web",
    )  # fmt: skip
    assert code == 0
    key = out.splitlines()[-1]
    key_id = verify(tmp_path, key)
    assert "predict, feedback" in out or "feedback, predict" in out
    code, out, _ = run(capsys, "list", *where, "--json")
    [listed] = json.loads(out)
    assert (listed["id"], listed["models"], listed["status"]) == (key_id, ["iris", "digits"], "active")
    assert key.split("_")[2] not in out
    assert run(capsys, "revoke", *where, key_id)[0] == 0
    code, out, _ = run(capsys, "list", *where)
    assert key_id in out
    assert "revoked" in out


def test_data_dir_comes_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MDEPLOY_DATA_DIR", str(tmp_path))
    code, out, _ = run(capsys, "create", "--scope", "admin")
    assert code == 0
    verify(tmp_path, out.splitlines()[-1])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["create", "--scope", "root"], "invalid choice: 'root'"),
        (["create"], "--scope"),
        (["create", "--scope", "predict", "--rate-limit", "100/fortnight"], "not understood"),
        (["create", "--scope", "predict", "--expires", "2020-01-01"], "in the past"),
        (["create", "--scope", "predict", "--expires", "someday"], "neither a date"),
        (["create", "--scope", "predict", "--models", " , "], "names no model"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    code, out, err = run(capsys, *arguments, "--data-dir", str(tmp_path))
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in out + err


def test_revoking_an_unknown_key_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "create", "--data-dir", str(tmp_path), "--scope", "admin")
    code, _, err = run(capsys, "revoke", "--data-dir", str(tmp_path), "0123456789abcdef")
    assert code == 1
    assert err.strip() == "mdeploy: error: no API key with id '0123456789abcdef'"


def test_list_of_a_missing_data_folder_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "list", "--data-dir", str(tmp_path / "typo"))
    assert code == 1
    assert "no gateway database at" in err
    assert not (tmp_path / "typo").exists()


def test_remote_create_list_and_revoke_through_the_admin_api(
    live_gateway: LiveGateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = live_gateway.database_path.parent
    code, out, _ = run(capsys, "create", "--data-dir", str(data_dir), "--scope", "admin")
    monkeypatch.setenv("MDEPLOY_API_KEY", out.splitlines()[-1])
    remote = ["--gateway", live_gateway.url]
    code, out, _ = run(capsys, "create", *remote, "--scope", "predict", "--models", "iris")
    assert code == 0
    key = out.splitlines()[-1]
    predict = f"{live_gateway.url}/v1/models/iris:predict"
    assert httpx.post(predict, headers={"X-API-Key": key}).status_code == 200
    key_id = key.split("_")[1]
    assert key_id in run(capsys, "list", *remote)[1]
    assert run(capsys, "revoke", *remote, key_id)[0] == 0
    assert httpx.post(predict, headers={"X-API-Key": key}).status_code == 401


def test_remote_with_a_non_admin_key_says_which_key_lacks_what(
    live_gateway: LiveGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = live_gateway.database_path.parent
    key = run(capsys, "create", "--data-dir", str(data_dir), "--scope", "predict")[1].splitlines()[-1]
    code, _, err = run(capsys, "list", "--gateway", live_gateway.url, "--api-key", key)
    assert code == 1
    assert f"API key mdk_{key.split('_')[1]}_... is not allowed" in err
    assert "'admin' scope" in err
    assert key.split("_")[2] not in err
