"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 for tests (the `serve` fixture in
tests/conftest.py starts one)."""

from __future__ import annotations

import json
import threading
import time
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def reply(*contents, status=200, headers=None, raw=None, delay=0.0, trickle=0.0):
    """What the scripted server sends: chat-completion choices with `contents`, or `raw` bytes / an object;
    `trickle`: the body a byte at a time, this many seconds apart."""
    if raw is None:
        raw = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": c}, "finish_reason": "stop"}
                for i, c in enumerate(contents)
            ],
        }
    return {"status": status, "headers": headers or {}, "raw": raw, "delay": delay, "trickle": trickle}


class Server:
    """A chat-completions server; `script(request_body, headers, index)` decides every reply. It records every
    request's JSON body, headers and arrival time (`gaps()`: the seconds between consecutive requests)."""

    def __init__(self, script):
        self.script = script
        self.requests: list[dict] = []
        self.headers: list[Message] = []  # case-insensitive names, as in HTTP
        self.times: list[float] = []  # time.monotonic() at each request's arrival
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    index = len(outer.requests)
                    outer.requests.append(body)
                    outer.times.append(time.monotonic())
                    outer.headers.append(self.headers)  # an HTTPMessage: names are case-insensitive
                assert self.path == "/v1/chat/completions"
                r = outer.script(body, self.headers, index)
                if r["delay"]:
                    time.sleep(r["delay"])
                raw = r["raw"]
                data = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
                try:
                    self.send_response(r["status"])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in r["headers"].items():
                        self.send_header(k, v)
                    self.end_headers()
                    if r.get("trickle"):
                        for byte in data:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(r["trickle"])
                    else:
                        self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:])]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def last_user(body):
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


def canned(body, headers, index):
    """A deterministic answer per prompt (class and question), `n` choices."""
    q = last_user(body)
    name = q.split('"')[1]
    kind = "important" if "feature" in q else "around" if "around" in q else "superclass"
    return reply(*[f"- {name} {kind} {j}\n- shared {kind}" for j in range(body.get("n", 1))])
