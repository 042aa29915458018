"""The connector's configuration file: TOML, validated by pydantic, unknown keys refused.

Secrets never live in the file itself: the database password and the API key come from an
environment variable, a file, or systemd's ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from datetime import tzinfo
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from connector import timeutil
from connector.drivers import require_driver
from connector.errors import ConfigError
from connector.files import world_readable

Duration = Annotated[float, BeforeValidator(timeutil.parse_duration)]

DEFAULT_CONFIG_PATHS = (
    Path("config.toml"),
    Path("/etc/shopimind-connector/config.toml"),
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    url: str = Field(description="SQLAlchemy URL of the shop database, without the password")
    password_env: str | None = "SHOP_DB_PASSWORD"
    password_file: str | None = None
    password_credential: str | None = "db_password"
    timezone: str = "UTC"
    safety_lag: Duration = 2.0
    connect_timeout: Duration = 10.0

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        timeutil.zone(v)
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            u = sa.engine.make_url(v)
        except sa.exc.ArgumentError as exc:
            raise ValueError(
                "not a SQLAlchemy database URL (e.g. 'postgresql+psycopg://shop@db/shop')"
            ) from exc
        if u.password:
            raise ValueError(
                "the URL contains a password; remove it and set source.password_env or "
                "source.password_file instead (secrets must not sit in the config file)"
            )
        return v

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


class ShopimindConfig(_Strict):
    base_url: str = "https://core.shopimind.com"
    api_key_env: str | None = "SHOPIMIND_API_KEY"
    api_key_file: str | None = None
    api_key_credential: str | None = "api_key"
    requests_per_minute: int = Field(600, ge=1, le=100_000)
    timeout: Duration = 30.0
    max_retries: int = Field(5, ge=0, le=20)
    backoff_base: Duration = 1.0
    backoff_cap: Duration = 30.0
    id_data_source: int | None = None


class StateConfig(_Strict):
    url: str = "sqlite:///state/connector-state.sqlite"


class SyncConfig(_Strict):
    mappings_dir: str = "mappings"
    poll_interval: Duration = 60.0
    page_size: int = Field(500, ge=1, le=100_000)
    max_in_flight: int = Field(8, ge=1, le=256)
    # worker processes that map a backfill's full pages (see connector/mapworkers.py); None: one
    # per core but one, at most 4; 0: map in the connector's own process
    map_workers: int | None = Field(None, ge=0, le=64)
    reconcile_interval: Duration = 3600.0  # hard-delete reconciliation; 0 disables it
    # the service's sampled audit (connector/audit): how often (0: off), keys per mapping,
    # whether it repairs, its share of the request budget while live changes flow, how long it
    # waits before looking at a difference again, and the share of records a repair may delete
    audit_interval: Duration = 0.0
    audit_sample: int = Field(1000, ge=1, le=1_000_000)
    audit_repair: bool = False
    audit_share: float = Field(0.2, gt=0.0, le=1.0)
    audit_recheck_delay: Duration = 30.0
    audit_max_delete_share: float = Field(0.5, ge=0.0, le=1.0)
    only: list[str] = Field(default_factory=list)
    # a pass without progress (no page read, no API answer) this long is hung: the service stops
    # pinging the systemd watchdog, which restarts it
    pass_timeout: Duration = Field(1800.0, ge=1.0)


class MetricsConfig(_Strict):
    # "HOST:PORT" or "PORT" (then 127.0.0.1) of the Prometheus endpoint; None = off
    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v is not None:
            parse_listen(v)
        return v

    def address(self) -> tuple[str, int] | None:
        return None if self.listen is None else parse_listen(self.listen)


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``"0.0.0.0:9464"`` or ``"9464"`` (loopback)."""
    text = value.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]")
    if not port.isdigit() or not 0 <= int(port) < 65536 or not host:
        raise ValueError(
            f'{value!r}: write HOST:PORT like "127.0.0.1:9464" (or just a port for loopback)'
        )
    return host, int(port)


class Config(_Strict):
    source: SourceConfig
    shopimind: ShopimindConfig = ShopimindConfig()
    state: StateConfig = StateConfig()
    sync: SyncConfig = SyncConfig()
    metrics: MetricsConfig = MetricsConfig()

    # where the file was read from; relative paths are resolved against its folder
    base_dir: Path = Field(default=Path("."), exclude=True)
    file: str = Field(default="<memory>", exclude=True)

    @property
    def shop_tz(self) -> tzinfo:
        return timeutil.zone(self.source.timezone)

    @property
    def mappings_path(self) -> Path:
        return _resolve(self.base_dir, self.sync.mappings_dir)

    def state_url(self) -> str:
        return _resolve_sqlite(self.base_dir, self.state.url)

    def source_url(self) -> sa.URL:
        """The shop database URL with the password filled in from its secret source."""
        url = sa.engine.make_url(_resolve_sqlite(self.base_dir, self.source.url))
        src = self.source
        # SQLite takes no password: only the places the config names explicitly are looked at
        # there, and a password found in one of them is a mistake to report
        places = {
            k: getattr(src, k)
            for k in ("password_env", "password_file", "password_credential")
            if not src.is_sqlite or k in src.model_fields_set
        }
        password = read_secret(
            "shop database password",
            env=places.get("password_env"),
            file=places.get("password_file"),
            credential=places.get("password_credential"),
            base_dir=self.base_dir,
            required=False,
        )
        if not src.is_sqlite:
            require_driver(url, "shop database")
        if password is None:
            return url
        if src.is_sqlite:
            keys = " / ".join(f"source.{k}" for k in places)
            raise ConfigError(
                f"{self.file}: source.url is an SQLite database, which takes no password, but "
                f"{keys} provides one: remove {'it' if len(places) == 1 else 'them'} from [source]"
            )
        return url.set(password=password)

    def api_key(self) -> str:
        key = read_secret(
            "ShopiMind API key",
            env=self.shopimind.api_key_env,
            file=self.shopimind.api_key_file,
            credential=self.shopimind.api_key_credential,
            base_dir=self.base_dir,
            required=True,
        )
        assert key is not None
        return key

    def warnings(self) -> list[str]:
        """Settings that work but expose a secret: a secret file everyone may read, an API key
        sent unencrypted to another host."""
        out = []
        files = [("shopimind.api_key_file", self.shopimind.api_key_file)]
        if not self.source.is_sqlite:
            files.append(("source.password_file", self.source.password_file))
        for key, value in files:
            if value and world_readable(path := _resolve(self.base_dir, value)):
                out.append(
                    f"{self.file}: {key}: {path} is readable by every user of this machine: "
                    f"`chmod 600 {path}` (or chmod 640 with a group only the connector is in)"
                )
        url = urlsplit(self.shopimind.base_url)
        if url.scheme == "http" and not _loopback(url.hostname or ""):
            out.append(
                f"{self.file}: shopimind.base_url: {self.shopimind.base_url} is plain http to "
                f"another host: the API key and the shop's data travel unencrypted; use https://"
            )
        return out

    def secret_values(self) -> list[str]:
        """Every secret this config can read, for log redaction (missing ones are skipped)."""
        out: list[str] = []
        try:
            out.append(self.api_key())
        except ConfigError:
            pass
        try:
            password = self.source_url().password
        except ConfigError:
            password = None
        if isinstance(password, str) and password:
            out.append(password)
        return out


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def _resolve_sqlite(base: Path, url: str) -> str:
    """Relative SQLite paths are relative to the config file's folder."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rel = url[len("sqlite:///") :]
        if rel and rel != ":memory:":
            return "sqlite:///" + str(_resolve(base, rel).resolve())
    return url


def read_secret(
    what: str,
    *,
    env: str | None,
    file: str | None,
    credential: str | None,
    base_dir: Path,
    required: bool,
) -> str | None:
    """A secret from (in order) an explicit file, the environment, or systemd credentials."""
    if file:
        path = _resolve(base_dir, file)
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the {what} from file {path}: {exc.strerror}") from None
    if env and os.environ.get(env):
        return os.environ[env].strip()
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if credential and cred_dir and (Path(cred_dir) / credential).is_file():
        return (Path(cred_dir) / credential).read_text(encoding="utf-8").strip()
    if required:
        where = ["a file (the *_file key)"]
        if env:
            where.insert(0, f"the environment variable {env}")
        if credential:
            where.append(f"the systemd credential '{credential}' (LoadCredential=)")
        raise ConfigError(f"the {what} is missing: provide it through " + ", or ".join(where))
    return None


def _format_validation(exc: ValidationError, file: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; config.example.toml lists every key)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {file}: {loc}: {msg}")
    return (
        f"invalid configuration ({len(lines)} problem{'s' if len(lines) > 1 else ''}):\n"
        + "\n".join(lines)
    )


def load_config(path: str | Path | None) -> Config:
    """Read and validate a config file; ConfigError (exit code 2) says what and where."""
    if path is None:
        env_path = os.environ.get("SHOPIMIND_CONNECTOR_CONFIG")
        if env_path:
            path = env_path
        else:
            path = next((p for p in DEFAULT_CONFIG_PATHS if p.is_file()), None)
            if path is None:
                raise ConfigError(
                    "no configuration file: pass --config FILE "
                    "(or set SHOPIMIND_CONNECTOR_CONFIG); "
                    "start from config.example.toml"
                )
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: TOML syntax error: {exc}") from None
    return config_from_dict(data, base_dir=p.resolve().parent, file=str(p))


def config_from_dict(data: dict[str, Any], *, base_dir: Path, file: str = "<memory>") -> Config:
    for internal in ("base_dir", "file"):
        if internal in data:
            raise ConfigError(f"invalid configuration:\n  {file}: {internal}: unknown key")
    try:
        return Config.model_validate({**data, "base_dir": base_dir, "file": file})
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, file)) from None


__all__ = ["Config", "SecretStr", "config_from_dict", "load_config", "read_secret"]
