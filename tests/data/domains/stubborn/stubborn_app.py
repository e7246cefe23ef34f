"""An ASGI app that ignores SIGTERM and spawns a detached grandchild (which ignores it too).

GET / answers JSON with the app's pid and the grandchild's pid.
"""

import json
import os
import signal
import subprocess
import sys

_SPAWN = (
    "import subprocess, sys\n"
    "p = subprocess.Popen([sys.executable, '-c', "
    "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'],"
    " start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "print(p.pid, flush=True)\n"
)

state = {"grandchild": None}


def _spawn_detached() -> int:
    # Double fork: the intermediate exits, the grandchild is reparented and in a session of its own.
    out = subprocess.run([sys.executable, "-c", _SPAWN], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                state["grandchild"] = _spawn_detached()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = json.dumps({"pid": os.getpid(), "grandchild": state["grandchild"]}).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})
