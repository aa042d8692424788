"""The CLI's gateway client: where settings come from, and errors a person can act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.ports import free_port
from gateway.auth.keys import with_keys
from gateway.settings import GatewaySettings
from mdeploy.client import DEFAULT_GATEWAY, ClientConfig, ClientError, GatewayClient
from tests.gateway.conftest import LiveGateway

# Starts real processes (servers, gateways, redis, pip or the CLI): the e2e tier.
pytestmark = pytest.mark.e2e


def write_config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return {"MDEPLOY_CONFIG": str(path)}


def test_flags_win_over_environment_over_config_file(tmp_path: Path) -> None:
    environ = write_config(tmp_path, 'gateway = "http://file:1"\napi_key = "file-key"\n')
    assert ClientConfig.resolve(None, None, environ=environ).gateway == "http://file:1"
    assert ClientConfig.resolve(None, None, environ=environ).api_key == "file-key"
    environ |= {"MDEPLOY_GATEWAY": "http://env:2/", "MDEPLOY_API_KEY": "env-key"}
    resolved = ClientConfig.resolve(None, None, environ=environ)
    assert (resolved.gateway, resolved.api_key) == ("http://env:2", "env-key")
    resolved = ClientConfig.resolve("http://flag:3", "flag-key", environ=environ)
    assert (resolved.gateway, resolved.api_key) == ("http://flag:3", "flag-key")


def test_without_any_setting_the_local_gateway_is_used(tmp_path: Path) -> None:
    resolved = ClientConfig.resolve(None, None, environ={"XDG_CONFIG_HOME": str(tmp_path)})
    assert (resolved.gateway, resolved.api_key) == (DEFAULT_GATEWAY, None)
    assert resolved.config_file == tmp_path / "mdeploy" / "config.toml"


@pytest.mark.parametrize(
    ("text", "message"),
    [("gateway = ", "cannot read the config file"), ("gateway = 8000", "must be a string")],
)
def test_a_bad_config_file_is_named_in_the_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ClientError, match=message) as raised:
        ClientConfig.resolve(None, None, environ=write_config(tmp_path, text))
    assert str(tmp_path / "config.toml") in raised.value.message


def test_unreachable_gateway_names_the_url_and_how_to_set_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    config = ClientConfig.resolve(url, None, environ={"MDEPLOY_CONFIG": str(tmp_path / "c.toml")})
    with GatewayClient(config) as client, pytest.raises(ClientError) as raised:
        client.get_json("/v1/admin/keys")
    assert url in raised.value.message
    assert "MDEPLOY_GATEWAY" in raised.value.message
    assert raised.value.status is None


def client_for(live_gateway: LiveGateway, api_key: str | None, tmp_path: Path) -> GatewayClient:
    environ = {"MDEPLOY_CONFIG": str(tmp_path / "c.toml")}
    return GatewayClient(ClientConfig.resolve(live_gateway.url, api_key, environ=environ))


def make_key(live_gateway: LiveGateway, *scopes: str) -> str:
    settings = GatewaySettings(data_dir=live_gateway.database_path.parent)
    return with_keys(settings, lambda keys: keys.create(scopes)).key


def test_missing_key_says_how_to_give_one(live_gateway: LiveGateway, tmp_path: Path) -> None:
    with client_for(live_gateway, None, tmp_path) as client, pytest.raises(ClientError) as raised:
        client.get_json("/v1/admin/keys")
    assert raised.value.status == 401
    assert "needs an API key" in raised.value.message
    assert "MDEPLOY_API_KEY" in raised.value.message


def test_rejected_key_is_named_by_its_id_only(live_gateway: LiveGateway, tmp_path: Path) -> None:
    key = make_key(live_gateway, "admin")
    wrong = key[:-3] + ("xyz" if not key.endswith("xyz") else "abc")
    with client_for(live_gateway, wrong, tmp_path) as client, pytest.raises(ClientError) as raised:
        client.get_json("/v1/admin/keys")
    assert raised.value.status == 401
    assert f"rejected API key mdk_{key.split('_')[1]}_..." in raised.value.message
    assert wrong.split("_")[2] not in raised.value.message


def test_other_errors_show_the_gateways_message(live_gateway: LiveGateway, tmp_path: Path) -> None:
    with client_for(live_gateway, make_key(live_gateway, "admin"), tmp_path) as client:
        assert client.get_json("/v1/admin/keys")["keys"]
        with pytest.raises(ClientError) as raised:
            client.post_json("/v1/admin/keys", {"scopes": ["predict"], "rate_limit": "1/fortnight"})
    assert raised.value.status == 400
    assert raised.value.message.startswith("the gateway answered 400 Bad Request: rate limit '1/fortnight'")
