"""``run``: open the runtime, check the shop database, serve metrics, say READY to systemd, run
the :class:`~connector.service.Service`, and switch to a new configuration after a valid SIGHUP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from connector.config import Config
from connector.errors import ConfigError, ConnectorError
from connector.lock import InstanceLock
from connector.metrics import Metrics
from connector.runtime import Runtime
from connector.service import Control, PassHook, Service
from connector.systemd import Notifier

log = logging.getLogger("connector.service")


def serve(
    cfg: Config,
    *,
    notifier: Notifier | None = None,
    lock: InstanceLock | None = None,
    on_pass: PassHook | None = None,
) -> int:
    """``run``: open everything, say READY, run the service, reload on SIGHUP, stop on SIGTERM."""
    notifier = notifier or Notifier()
    metrics = Metrics() if cfg.metrics.listen is not None else None
    control = Control()
    current: dict[str, Service] = {}

    def on_request(path: str, status: int | None, seconds: float) -> None:
        if metrics is not None:
            metrics.on_request(path, status, seconds)
        svc = current.get("svc")
        if svc is not None:
            svc.on_api_answer(path)

    rt = Runtime.open(cfg, on_request=on_request)
    try:
        rt.reader.db_now_utc()  # the first shop database connection: fails here, not later
        if metrics is not None:
            address = cfg.metrics.address()
            assert address is not None
            try:
                port = metrics.serve(*address)
            except OSError as exc:
                raise ConfigError(
                    f"metrics.listen {cfg.metrics.listen!r}: cannot listen: {exc.strerror}"
                ) from None
            log.info("metrics on http://%s:%d/metrics", _host(address[0]), port)
        caught_up: set[str] = set()
        notifier.ready(f"started: {len(rt.mappings)} mapping(s)")
        while True:
            svc = Service(
                rt, on_pass=on_pass, notifier=notifier, metrics=metrics, lock=lock,
                caught_up=caught_up, control=control,
            )  # fmt: skip
            current["svc"] = svc
            if metrics is not None:
                metrics.attach(
                    {m.name: m.resource.name for m in rt.mappings if m.enabled},
                    svc.cursor_time,
                    _budget_waited(rt),
                )
            code = svc.run()
            if code != -1 or svc.reload_config is None:
                return code
            caught_up = svc.caught_up
            try:
                new_rt = Runtime.open(svc.reload_config, on_request=on_request)
            except ConnectorError as exc:
                log.error("reload failed: %s; going on with the previous configuration", exc)
                rt.stop.clear()
            else:
                rt.close()
                rt = new_rt
                log.info("reloaded %s: %d mapping(s)", rt.config.file, len(rt.mappings))
            notifier.ready(f"reloaded: {len(rt.mappings)} mapping(s)")
    finally:
        current.clear()
        if metrics is not None:
            metrics.close()
        rt.close()


def _budget_waited(rt: Runtime) -> Callable[[], float]:
    client = rt.client
    return (lambda: client.budget.waited) if client is not None else (lambda: 0.0)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
