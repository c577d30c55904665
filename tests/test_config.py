"""Configuration: file, then environment, then flags; strict keys; secrets never shown."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from mde.clock import IST
from mde.config import DEFAULT_KITE_ROOT, load
from mde.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file_use_kite_and_the_platform_data_dir(tmp_path: Path) -> None:
    s = load(environ={})
    assert s.source == "kite"
    assert s.kite.root == DEFAULT_KITE_ROOT
    assert s.cache_dir.name == "cache" and "mde" in s.cache_dir.parts
    assert s.refresh.timeframes == ("5m",) and s.refresh.count == 1000
    assert s.config_path is None


def test_relative_cache_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    conf = write(tmp_path / "conf" / "mde.toml", '[cache]\ndir = "data/c"\n')
    s = load(conf, environ={})
    assert s.cache_dir == (tmp_path / "conf" / "data" / "c")


def test_lookup_order_flag_then_mde_config_then_local_file(tmp_path: Path) -> None:
    a = write(tmp_path / "a.toml", '[source]\nkind = "sample"\n')
    b = write(tmp_path / "b.toml", '[source]\nkind = "kite"\n')
    write(Path.cwd() / "mde.toml", "[refresh]\ncount = 7\n")
    assert load(environ={}).refresh.count == 7  # ./mde.toml
    assert load(environ={"MDE_CONFIG": str(a)}).source == "sample"
    assert load(b, environ={"MDE_CONFIG": str(a)}).source == "kite"


def test_environment_overrides_file_and_flags_override_environment(tmp_path: Path) -> None:
    conf = write(tmp_path / "m.toml", '[source]\nkind = "kite"\n[cache]\ndir = "x"\n[kite]\nroot = "http://file"\n')
    env = {"MDE_SOURCE": "sample", "MDE_CACHE_DIR": str(tmp_path / "envcache"), "MDE_KITE_ROOT": "http://env/"}
    s = load(conf, environ=env)
    assert s.source == "sample" and s.cache_dir == tmp_path / "envcache" and s.kite.root == "http://env"
    s = load(conf, environ=env, source="kite", cache_dir=tmp_path / "flag")
    assert s.source == "kite" and s.cache_dir == tmp_path / "flag"


def test_mde_now_pins_the_clock_and_naive_times_are_ist() -> None:
    s = load(environ={"MDE_NOW": "2024-06-14T10:30"})
    assert s.now == datetime(2024, 6, 14, 10, 30, tzinfo=IST)
    assert s.clock() == s.now
    s = load(environ={"MDE_NOW": "2024-06-14T05:00:00Z"})
    assert s.clock().astimezone(IST).hour == 10 and s.clock().astimezone(IST).minute == 30


def test_bad_mde_now_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="MDE_NOW"):
        load(environ={"MDE_NOW": "yesterday"})


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('[cache]\ndirr = "x"\n', "unknown key 'dirr' in [cache]"),
        ('[cashe]\ndir = "x"\n', "unknown section [cashe]"),
        ('[refresh]\ncount = "many"\n', "'refresh.count'"),
        ('[refresh]\nsymbols = "NIFTY"\n', "'refresh.symbols'"),
        ('[source]\nkind = "yahoo"\n', "'source.kind'"),
        ("[cache\n", "not valid TOML"),
    ],
)
def test_unknown_keys_and_wrong_types_name_the_key_and_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    conf = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as err:
        load(conf, environ={})
    message = str(err.value)
    assert fragment in message and str(conf) in message and "\n" not in message


def test_a_typo_gets_a_suggestion(tmp_path: Path) -> None:
    conf = write(tmp_path / "m.toml", '[refresh]\ntimeframe = ["5m"]\n')
    with pytest.raises(ConfigError, match="did you mean 'timeframes'"):
        load(conf, environ={})


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match="MDE_CONFIG"):
        load(environ={"MDE_CONFIG": str(tmp_path / "nope.toml")})


def test_secrets_never_appear_in_the_settings_repr() -> None:
    s = load(environ={"KITE_API_KEY": "key123", "KITE_ACCESS_TOKEN": "tok-SECRET-1", "KITE_API_SECRET": "sec-SECRET-2"})
    assert s.kite.access_token == "tok-SECRET-1" and s.kite.api_secret == "sec-SECRET-2"
    text = repr(s) + str(s) + repr(s.kite)
    assert "tok-SECRET-1" not in text and "sec-SECRET-2" not in text
    assert "key123" in text  # the api key is not a secret


def test_settings_are_frozen() -> None:
    s = load(environ={})
    with pytest.raises(AttributeError):
        s.source = "sample"  # type: ignore[misc]


def test_aliases_are_read_and_upper_cased(tmp_path: Path) -> None:
    conf = write(tmp_path / "m.toml", '[aliases]\nmyfut = "NFO:NIFTY24DECFUT"\n')
    assert dict(load(conf, environ={}).aliases) == {"MYFUT": "NFO:NIFTY24DECFUT"}


def test_the_repository_example_config_is_valid() -> None:
    repo_conf = Path(__file__).resolve().parents[1] / "mde.toml"
    s = load(repo_conf, environ={})
    assert s.source == "sample"
    assert s.cache_dir == repo_conf.parent / "data" / "cache"
    assert s.refresh.symbols == ("NIFTY", "BANKNIFTY")
