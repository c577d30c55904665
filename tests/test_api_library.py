"""`mde.api.create_app(settings)` applies the token rule itself, whoever serves the app (any
ASGI server, not only `mde serve`): the token is `settings.serve.token` (MDE_API_TOKEN) unless
`token=` is given, and a non-loopback `[serve] host` without one is a ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mde.api import create_app
from mde.config import Settings, load
from mde.errors import ConfigError

SECRET = "lib-s3cret-42"


def settings_with(tmp_path: Path, toml: str = "", environ: dict[str, str] | None = None) -> Settings:
    conf = tmp_path / "mde.toml"
    conf.write_text(toml)
    return load(conf, cache_dir=tmp_path / "cache", source="sample", environ=environ or {})


def client(app: object) -> TestClient:
    return TestClient(app, base_url="http://127.0.0.1")  # type: ignore[arg-type]  # the Host rule refuses "testserver"


def test_without_a_token_a_loopback_app_is_open(tmp_path: Path) -> None:
    with client(create_app(settings_with(tmp_path))) as c:
        assert c.get("/api/series").status_code == 200


def test_the_token_from_the_settings_is_required_on_every_api_request(tmp_path: Path) -> None:
    app = create_app(settings_with(tmp_path, environ={"MDE_API_TOKEN": SECRET}))
    with client(app) as c:
        refused = c.get("/api/series")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert SECRET not in refused.text
        assert c.get("/api/series", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/series", headers={"Authorization": f"Basic {SECRET}"}).status_code == 401
        assert c.get("/api/series", headers={"Authorization": f"Bearer {SECRET}"}).status_code == 200
        assert c.get("/healthz").status_code == 200  # holds no data: open


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.com"])
def test_a_public_host_without_a_token_is_a_config_error(tmp_path: Path, host: str) -> None:
    settings = settings_with(tmp_path, f'[serve]\nhost = "{host}"\n')
    with pytest.raises(ConfigError, match=f"refusing to serve on {host} without an API token") as err:
        create_app(settings)
    assert err.value.exit_code == 2
    create_app(settings, token=SECRET)  # a token given: allowed
    create_app(settings_with(tmp_path, f'[serve]\nhost = "{host}"\n', {"MDE_API_TOKEN": SECRET}))


def test_an_explicit_token_wins_over_the_settings(tmp_path: Path) -> None:
    app = create_app(settings_with(tmp_path, environ={"MDE_API_TOKEN": "from-env"}), token=SECRET)
    with client(app) as c:
        assert c.get("/api/series", headers={"Authorization": "Bearer from-env"}).status_code == 401
        assert c.get("/api/series", headers={"Authorization": f"Bearer {SECRET}"}).status_code == 200
