"""The sandbox in a process of its own (its own interpreter lock, like the real API), driven over
stdin: ``python -m tests.benchmarks.sandbox_proc RPM`` prints its URL, then answers each command
line with one JSON line:

* ``delay SECONDS`` — sleep that long before every ``/v1/`` answer (``Sandbox.inject_delay``);
* ``keys RESOURCE FILE`` — write the keys the sandbox stored for RESOURCE to FILE, one a line;
* ``requests FILE`` — write the request log to FILE as JSON lines;
* ``quit``.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from connector.sandbox import Sandbox
from tests.benchmarks.common import KEY


def main(argv: list[str]) -> int:
    with Sandbox({KEY}, requests_per_minute=int(argv[0])) as sb:
        print(json.dumps({"url": sb.url}), flush=True)
        for line in sys.stdin:
            cmd, *args = line.split()
            if cmd == "quit":
                break
            if cmd == "delay":
                sb.inject_delay(float(args[0]))
                answer: dict[str, object] = {"ok": True}
            elif cmd == "keys":
                keys = sb.context.store.send_counts(args[0])
                with open(args[1], "w", encoding="utf-8") as f:
                    f.writelines(f"{k}\n" for k in keys)
                answer = {"ok": True, "keys": len(keys)}
            elif cmd == "requests":
                log = sb.requests
                with open(args[0], "w", encoding="utf-8") as f:
                    f.writelines(json.dumps(dataclasses.asdict(r)) + "\n" for r in log)
                answer = {"ok": True, "requests": len(log)}
            else:
                answer = {"ok": False, "error": f"unknown command {cmd!r}"}
            print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
