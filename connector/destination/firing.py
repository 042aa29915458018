"""One call that must not be replayed blindly: an event trigger, sent and classified.

``ApiClient.request`` retries every transport error and 5xx, which is right for keyed upserts but
not for an event whose delivery is at-most-once. ``Firer.fire`` asks the client not to replay
ambiguous attempts unless the mapping wants at-least-once, and says what happened:

* ``sent`` (2xx); ``rejected`` (other 4xx: the API refused it, it did not fire);
* certainly not processed (no connection made; 429, which refuses before processing): retried
  in every mode;
* ambiguous (timeout or connection lost after sending, a bad answer, 408, any 5xx — a 503 may
  come from a gateway after ShopiMind applied the trigger): retried with
  the same ``Idempotency-Key`` when ``replay_ambiguous``, else returned as ``uncertain``.

Retries exhausted raise ``DeliveryError``; 401/403 raise ``AuthError``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from connector.destination.client import AmbiguousDelivery, ApiClient
from connector.errors import DeliveryError


def idempotency_key(mapping: str, code_name: str, key_text: str) -> str:
    """The same for every attempt to fire one row's event, across retries and restarts."""
    text = f"{mapping}\n{code_name}\n{key_text}"
    return "evt-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:48]


def strip_nulls(item: dict[str, Any]) -> dict[str, Any]:
    """The trigger body without NULL values and empty objects."""
    out: dict[str, Any] = {}
    for k, v in item.items():
        if isinstance(v, dict):
            v = {sk: sv for sk, sv in v.items() if sv is not None}
            if not v:
                continue
        if v is not None:
            out[k] = v
    return out


@dataclass
class Outcome:
    kind: Literal["sent", "rejected", "uncertain"]
    detail: Any = None
    status: int | None = None
    requests: int = 0


class Firer:
    """Sends one trigger and classifies the outcome (the ApiClient's budget, pool and key)."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def fire(
        self, path: str, body: dict[str, Any], key: str, *, replay_ambiguous: bool, what: str
    ) -> Outcome:
        tries: list[int] = []
        try:
            resp = self.client.request(
                "POST",
                path,
                body,
                headers={"Idempotency-Key": key},
                what=what,
                replay_ambiguous=replay_ambiguous,
                attempts=tries,
            )
        except AmbiguousDelivery as exc:
            return Outcome("uncertain", str(exc), None, len(tries))
        except DeliveryError as exc:
            raise DeliveryError(
                f"{exc}; the row stays before the cursor and the next pass fires it"
                + (" with the same Idempotency-Key" if replay_ambiguous else "")
            ) from exc
        if 200 <= resp.status_code < 300:
            return Outcome("sent", None, resp.status_code, len(tries))
        return Outcome("rejected", _answer(resp), resp.status_code, len(tries))


def _answer(resp: httpx.Response) -> Any:
    try:
        return {"status": resp.status_code, "body": resp.json()}
    except ValueError:
        return {"status": resp.status_code, "body": resp.text[:500]}
