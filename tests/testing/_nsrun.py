"""Run a piece of async Python inside a harness node and get its result back (for root tests).

NB: drivers act in the namespaces of the process that runs them, so tests never
call the floating_ip or disk drivers in the test process (the root namespace);
they run them here, in a child process inside a node.
"""

from __future__ import annotations

import json
import os
import textwrap
from typing import Any

from kagemusha.testing.netns import Harness

_PRELUDE = """
import asyncio, json, os, sys
from pathlib import Path
_args = json.loads(sys.argv[1])
_root_net = _args.pop("_root_net")
assert os.stat("/proc/self/ns/net").st_ino != _root_net, "refusing to run in the root network namespace"
"""

_EPILOGUE = """
try:
    _r = asyncio.run(main(**_args))
    print("\\n@@RESULT " + json.dumps({"ok": True, "value": _r}))
except BaseException as e:
    print("\\n@@RESULT " + json.dumps({"ok": False, "type": type(e).__name__, "message": str(e)}))
"""


class NodeError(Exception):
    """The code inside the node raised; ``type`` is the exception's class name."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(f"{type_}: {message}")
        self.type = type_
        self.message = message


def ns_call(h: Harness, node: str, body: str, timeout: float = 60.0, **args: Any) -> Any:
    """Run ``body`` (which defines ``async def main(**args)``) inside ``node``; return what main returns.

    Raises:
        NodeError: main raised (its type name and message are kept).
    """
    args["_root_net"] = os.stat("/proc/self/ns/net").st_ino
    code = _PRELUDE + textwrap.dedent(body) + _EPILOGUE
    res = h.python(node, code, json.dumps(args), timeout=timeout, check=False)
    for line in reversed(res.stdout.splitlines()):
        if line.startswith("@@RESULT "):
            out = json.loads(line[len("@@RESULT ") :])
            if out["ok"]:
                return out["value"]
            raise NodeError(out["type"], out["message"])
    raise AssertionError(f"no result from {node} (exit {res.returncode}):\n{res.stdout}\n{res.stderr}")
