"""The sysadmin's path through the real command line (``python -m connector.cli`` in a
subprocess): options honoured wherever they stand, one clear line and exit code 2 for every
setup mistake (never a traceback), ``check`` warning for every cursor without an index, files
created private whatever the umask, and warnings for settings that expose a secret."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import private_url
from tests.e2e.harness import MAPPINGS, Env, Result, make_env


def run(
    args: Sequence[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    umask: int = -1,
) -> Result:
    """``shopimind-connector ARGS`` as a person types it, in ``cwd``."""
    base = {k: v for k, v in os.environ.items() if k not in ("SHOPIMIND_CONNECTOR_CONFIG",)}
    proc = subprocess.run(
        [sys.executable, "-m", "connector.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**base, **(env or {})},
        umask=umask,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def one_clear_line(res: Result) -> str:
    """The error output of a setup mistake: exit code 2, one `error:` line, no traceback."""
    assert res.code == 2, res.text
    assert "Traceback" not in res.text, res.text
    errors = [line for line in res.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, res.err
    return errors[0]


def write_config(
    path: Path, source_url: str, state: str = "state/state.sqlite", **extra: str
) -> Path:
    lines = [f'[source]\nurl = "{source_url}"']
    lines += [f"{k} = {v}" for k, v in extra.items() if not k.startswith("shopimind_")]
    lines.append("[shopimind]")
    lines += [
        f"{k[len('shopimind_') :]} = {v}" for k, v in extra.items() if k.startswith("shopimind_")
    ]
    lines.append(
        f'[state]\nurl = "sqlite:///{state}"' if "://" not in state else f'[state]\nurl = "{state}"'
    )
    lines.append(f'[sync]\nmappings_dir = "{MAPPINGS}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- 1. global options before or after the command ---------------------------------------------


@pytest.fixture
def two_configs(tmp_path: Path) -> tuple[Path, Path]:
    """A config.toml in the working directory, and the one the admin means (elsewhere)."""
    write_config(tmp_path / "config.toml", "sqlite:///in-cwd.sqlite")
    (tmp_path / "etc").mkdir()
    meant = write_config(tmp_path / "etc" / "shop.toml", "sqlite:///meant.sqlite")
    return tmp_path, meant


@pytest.mark.parametrize(
    "args",
    [
        ["--config", "{meant}", "check", "--offline"],
        ["check", "--offline", "--config", "{meant}"],
        ["-c", "{meant}", "check", "--config", "{meant}", "--offline"],
    ],
    ids=["before", "after", "both-same"],
)
def test_explicit_config_wins_wherever_it_stands(
    two_configs: tuple[Path, Path], args: list[str]
) -> None:
    cwd, meant = two_configs
    res = run([a.format(meant=meant) for a in args], cwd)
    assert res.code == 0, res.text
    assert f"config ok: {meant}" in res.out
    assert "in-cwd" not in res.text


def test_explicit_config_wins_over_the_environment(two_configs: tuple[Path, Path]) -> None:
    cwd, meant = two_configs
    res = run(
        ["--config", str(meant), "check", "--offline"],
        cwd,
        env={"SHOPIMIND_CONNECTOR_CONFIG": str(cwd / "config.toml")},
    )
    assert res.code == 0, res.text
    assert f"config ok: {meant}" in res.out


def test_conflicting_global_options_are_an_error(two_configs: tuple[Path, Path]) -> None:
    cwd, meant = two_configs
    res = run(["--config", str(meant), "check", "--offline", "--config", "config.toml"], cwd)
    assert res.code == 2
    assert "--config" in res.err and str(meant) in res.err and "config.toml" in res.err
    assert "config ok" not in res.out
    res = run(["--log-level", "debug", "db", "upgrade", "--log-level", "error"], cwd)
    assert res.code == 2
    assert "--log-level given twice with different values ('debug' and 'error')" in res.err


def test_log_options_before_the_command_are_honoured(tmp_path: Path) -> None:
    res = run(["--log-format", "json", "--config", "missing.toml", "status"], tmp_path)
    assert res.code == 2
    line = json.loads(res.err.strip())
    assert line["level"] == "error" and "missing.toml" in line["message"]

    write_config(tmp_path / "c.toml", "sqlite:///shop.sqlite", shopimind_api_key_file='"key"')
    (tmp_path / "key").write_text("k" * 20)
    (tmp_path / "key").chmod(0o644)
    assert "WARNING" in run(["check", "--offline", "-c", "c.toml"], tmp_path).err
    quiet = run(["--log-level", "error", "check", "--offline", "-c", "c.toml"], tmp_path)
    assert quiet.code == 0, quiet.text
    assert "WARNING" not in quiet.err


# -- 3. setup mistakes: one line, exit code 2 ----------------------------------------------------


def test_missing_driver_names_the_extra(tmp_path: Path) -> None:
    # a driver that is not installed: an import of it fails as in an environment without it
    fake = tmp_path / "no-drivers" / "pymysql"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pymysql'\", name='pymysql')\n"
    )
    write_config(tmp_path / "c.toml", "mysql+pymysql://shop@127.0.0.1:3306/shop")
    pythonpath = os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])
    assert run(["db", "upgrade", "--config", "c.toml"], tmp_path).code == 0
    for args in (["check", "--offline"], ["check"], ["sync"], ["preview", "customers"]):
        res = run([*args, "--config", "c.toml"], tmp_path, env={"PYTHONPATH": pythonpath})
        line = one_clear_line(res)
        assert "'pymysql' is not installed" in line and "[mysql]" in line, line
        assert "config ok" not in res.out
    # status works without the shop database; it gives the reason in the rows-behind column
    res = run(["status", "--config", "c.toml"], tmp_path, env={"PYTHONPATH": pythonpath})
    assert res.code == 0 and "Traceback" not in res.text, res.text
    assert (
        "unknown (shop database mysql+pymysql://shop@127.0.0.1:3306/shop: the database "
        "driver 'pymysql' is not installed" in res.out
    )
    # psycopg2 is not the driver the [postgres] extra installs
    write_config(tmp_path / "c.toml", "postgresql+psycopg2://shop@127.0.0.1/shop")
    line = one_clear_line(run(["check", "--config", "c.toml"], tmp_path))
    assert "'psycopg2' is not installed" in line and "postgresql+psycopg://" in line, line


def test_sqlite_shop_with_a_password_is_refused_in_one_line(tmp_path: Path) -> None:
    write_config(tmp_path / "c.toml", "sqlite:///shop.sqlite", password_env='"SHOP_PW"')
    line = one_clear_line(
        run(["check", "--config", "c.toml"], tmp_path, env={"SHOP_PW": "pw-1234"})
    )
    assert "SQLite" in line and "source.password_env" in line, line
    assert "pw-1234" not in line
    # the default places (SHOP_DB_PASSWORD, the db_password credential) are not looked at
    write_config(tmp_path / "c.toml", "sqlite:///shop.sqlite")
    res = run(["check", "--config", "c.toml"], tmp_path, env={"SHOP_DB_PASSWORD": "pw-1234"})
    assert "SQLite" not in res.text and "Traceback" not in res.text, res.text


@pytest.mark.parametrize("command", [["status"], ["sync"], ["run"], ["db", "upgrade"]])
def test_damaged_state_database_exits_2_with_advice(tmp_path: Path, command: list[str]) -> None:
    write_config(tmp_path / "c.toml", "sqlite:///shop.sqlite")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.sqlite").write_bytes(b"not a database at all\n" * 400)
    line = one_clear_line(run([*command, "--config", "c.toml"], tmp_path))
    assert str(tmp_path / "state" / "state.sqlite") in line
    assert "damaged" in line and "backup" in line and "db upgrade" in line, line


def test_state_database_that_cannot_be_opened_exits_2(backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        # a folder where the file should be: opening fails whoever runs the test (root included)
        (tmp_path / "state" / "state.sqlite").mkdir(parents=True)
        state, expected = "state/state.sqlite", ["cannot be opened", str(tmp_path / "state")]
    else:  # a server that has no such database
        url = sa.make_url(private_url(backend)).set(database="shopimind_no_such_db")
        state = url.render_as_string(hide_password=False)
        expected = ["refuses the connector", "shopimind_no_such_db", "state.url"]
    write_config(tmp_path / "c.toml", "sqlite:///shop.sqlite", state=state)
    for command in (["db", "upgrade"], ["sync"], ["status"]):
        line = one_clear_line(run([*command, "--config", "c.toml"], tmp_path))
        assert all(e in line for e in expected), line


@pytest.fixture
def state_env(db_url: str, tmp_path: Path) -> Path:
    """A config whose state database lives in the backend under test."""
    write_config(tmp_path / "c.toml", "sqlite:///shop.sqlite", state=db_url)
    return tmp_path


def test_half_created_state_is_repaired_by_db_upgrade(state_env: Path, db_url: str) -> None:
    assert run(["db", "upgrade", "-c", "c.toml"], state_env).code == 0
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM connector_alembic_version"))
        line = one_clear_line(run(["status", "-c", "c.toml"], state_env))
        assert "the connector's tables but no schema version" in line and "db upgrade" in line
        res = run(["db", "upgrade", "-c", "c.toml"], state_env)
        assert res.code == 0, res.text
        assert "no schema version" in res.err
        assert run(["status", "-c", "c.toml"], state_env).code == 0
        # tables missing as well: no guess, but exactly what to do
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE connector_alembic_version"))
            conn.execute(sa.text("DROP TABLE connector_runs"))
        line = one_clear_line(run(["db", "upgrade", "-c", "c.toml"], state_env))
        assert "half-created" in line and "connector_runs" in line and "db upgrade" in line
        # the other way round: a version recorded, a table dropped by hand
        with engine.begin() as conn:  # every table left: an empty database, created anew
            for table in sa.inspect(conn).get_table_names():
                if table.startswith("connector_"):
                    conn.execute(sa.text(f"DROP TABLE {table}"))
        assert run(["db", "upgrade", "-c", "c.toml"], state_env).code == 0
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE connector_rejects"))
        for command in (["status"], ["sync"], ["db", "upgrade"]):
            line = one_clear_line(run([*command, "-c", "c.toml"], state_env))
            assert "records schema revision" in line and "lacks connector_rejects" in line, line
    finally:
        engine.dispose()


# -- 5. check warns for every cursor without an index --------------------------------------------


@pytest.fixture
def shop_env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    with make_env(db_url, tmp_path) as e:
        yield e


def test_check_warns_for_every_cursor_without_an_index(shop_env: Env) -> None:
    env = shop_env
    for table in ("customer_group_links", "customer_notes"):
        env.execute(
            f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, "
            "group_id INTEGER NULL, updated_at TIMESTAMP NULL)"
        )
    env.use_mappings(["customers", "products"])
    customers = (env.mappings / "customers.toml").read_text()
    child = customers[customers.index("[children.group_ids]") :]
    customers = customers.replace(
        child,
        '[children.group_ids]\ntable = "customer_group_links"\n'
        'parent_key = { customer_id = "id" }\nvalue = "group_id"\ncursor = "updated_at"\n\n'
        '[changes.notes]\ntable = "customer_notes"\nparent_key = { customer_id = "id" }\n'
        'cursor = "updated_at"\n',
    )
    # rows without updated_at are read in the order of the fallback: it needs an index too
    customers = customers.replace(
        'cursor_fallback = "created_at"', 'cursor_fallback = "birth_date"'
    )
    (env.mappings / "customers.toml").write_text(customers)
    res = run(["check", "--config", str(env.config)], env.tmp)
    assert res.code == 0, res.text
    warnings = [line for line in res.err.splitlines() if "warning:" in line]
    where = sorted(line.split(": warning:")[0] for line in warnings)
    assert where == [
        "customers.toml: changes.notes.cursor",
        "customers.toml: children.group_ids.cursor",
        "customers.toml: source.cursor_fallback",
        "products.toml: source.cursor",
    ], res.err
    by_place = {line.split(": warning:")[0].rsplit(": ", 1)[1]: line for line in warnings}
    assert "no index starts with 'updated_at' on customer_notes" in by_place["changes.notes.cursor"]
    assert "customer_group_links" in by_place["children.group_ids.cursor"]
    assert "no index starts with 'birth_date' on customers" in by_place["source.cursor_fallback"]
    assert "cannot tell" in by_place["source.cursor"]
    assert "(4 warning(s))" in res.out


# -- 6. private files, warnings for exposed secrets ----------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_files_are_private_whatever_the_umask(shop_env: Env) -> None:
    env = shop_env
    env.use_mappings(["customers"])
    state = env.tmp / "private" / "state.sqlite"
    env.write_config(state={"url": f"sqlite:///{state}"})
    res = run(["db", "upgrade", "--config", str(env.config)], env.tmp, umask=0)
    assert res.code == 0, res.text
    assert (mode(state), mode(state.parent)) == (0o600, 0o700)
    # the service, started with umask 0: its lock and SQLite's -wal/-shm files while it runs
    files = [state.parent / f"state.sqlite{suffix}" for suffix in (".lock", "-wal", "-shm")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector.cli", "run", "--config", str(env.config)],
        cwd=env.tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        umask=0,
    )
    try:
        deadline = time.monotonic() + 60
        while not all(f.exists() for f in files) and time.monotonic() < deadline:
            assert proc.poll() is None, f"run ended with {proc.returncode}"
            time.sleep(0.05)
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert mode(state) == 0o600
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def test_world_readable_secret_file_and_plain_http_are_warned(tmp_path: Path) -> None:
    key = tmp_path / "api_key"
    key.write_text("k" * 24)
    cfg = write_config(
        tmp_path / "c.toml",
        "sqlite:///shop.sqlite",
        shopimind_api_key_file='"api_key"',
        shopimind_base_url='"http://api.example.com"',
    )
    key.chmod(0o644)
    res = run(["check", "--offline", "--config", str(cfg)], tmp_path)
    assert res.code == 0, res.text
    assert f"shopimind.api_key_file: {key} is readable by every user" in res.err
    assert "shopimind.base_url: http://api.example.com is plain http to another host" in res.err
    assert "k" * 24 not in res.text

    key.chmod(0o600)
    write_config(
        tmp_path / "c.toml",
        "sqlite:///shop.sqlite",
        shopimind_api_key_file='"api_key"',
        shopimind_base_url='"http://127.0.0.1:8765"',
    )
    res = run(["check", "--offline", "--config", str(cfg)], tmp_path)
    assert res.code == 0, res.text
    assert "WARNING" not in res.err
