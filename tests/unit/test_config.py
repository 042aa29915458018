"""Config files: validated, unknown keys refused, secrets never inline and never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import load_config
from connector.errors import ConfigError

BASE = """
[source]
url = "postgresql+psycopg://shop@db.internal/shop"
timezone = "Europe/Paris"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_example_config_is_valid() -> None:
    cfg = load_config(Path(__file__).resolve().parents[2] / "config.example.toml")
    assert cfg.shopimind.requests_per_minute == 600
    assert cfg.sync.poll_interval == 60.0
    assert cfg.source.safety_lag == 2.0


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.shopimind.base_url == "https://core.shopimind.com"
    assert cfg.state_url() == f"sqlite:///{tmp_path.resolve()}/state/connector-state.sqlite"
    assert cfg.mappings_path == tmp_path.resolve() / "mappings"
    assert str(cfg.shop_tz) == "Europe/Paris"


def test_unknown_keys_and_bad_values_all_reported(tmp_path: Path) -> None:
    text = BASE.replace('timezone = "Europe/Paris"', 'timezone = "Mars/Olympus"') + (
        '\n[shopimind]\nrequests_per_minut = 100\ntimeout = "soon"\n[sync]\npage_size = 0\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    msg = str(info.value)
    assert "source.timezone" in msg and "unknown time zone 'Mars/Olympus'" in msg
    assert "shopimind.requests_per_minut: unknown key" in msg
    assert "shopimind.timeout" in msg and "'soon' is not a duration" in msg
    assert "sync.page_size" in msg


def test_password_inline_refused(tmp_path: Path) -> None:
    text = BASE.replace("shop@db.internal", "shop:hunter2-secret@db.internal")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "contains a password" in str(info.value)
    assert "hunter2-secret" not in str(info.value)


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config.toml: TOML syntax error"):
        load_config(write(tmp_path, "[source\n"))


def test_secrets_from_file_env_and_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHOPIMIND_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("SHOP_DB_PASSWORD", raising=False)
    cfg = load_config(write(tmp_path, BASE))
    with pytest.raises(ConfigError) as info:
        cfg.api_key()
    assert "environment variable SHOPIMIND_API_KEY" in str(info.value)
    assert "systemd credential 'api_key'" in str(info.value)

    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "api_key").write_text("from-credentials-0123456789\n")
    (creds / "db_password").write_text("pw-from-credentials\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert cfg.api_key() == "from-credentials-0123456789"
    assert cfg.source_url().password == "pw-from-credentials"

    monkeypatch.setenv("SHOPIMIND_API_KEY", "from-env-0123456789abc")
    assert cfg.api_key() == "from-env-0123456789abc"  # the environment wins over credentials

    (tmp_path / "key").write_text("from-file-0123456789abc")
    cfg2 = load_config(write(tmp_path, BASE + '\n[shopimind]\napi_key_file = "key"\n'))
    assert cfg2.api_key() == "from-file-0123456789abc"  # an explicit file wins
    assert set(cfg2.secret_values()) == {"from-file-0123456789abc", "pw-from-credentials"}


def test_missing_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE + '\n[shopimind]\napi_key_file = "nope"\n'))
    with pytest.raises(ConfigError, match=r"cannot read the ShopiMind API key from file .*nope"):
        cfg.api_key()


def test_internal_keys_cannot_be_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="base_dir: unknown key"):
        load_config(write(tmp_path, 'base_dir = "/"\n' + BASE))
