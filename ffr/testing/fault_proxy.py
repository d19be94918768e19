"""A fault-injecting TCP proxy for HTTP object stores: put it between s3fs and an S3 server to rehearse flaky storage.

Every new HTTP request (a client chunk that starts with a method name, so keep-alive connections count
once per request, not once per connection) draws from a seeded generator: with ``reset_rate`` the connection
is reset (RST, both sides) instead of forwarding the request; with ``delay_rate`` the request is forwarded
after ``delay_s``. ``reset_rate=1`` is a storage outage. Counters say what was injected, so a test can check
that the client's retry count matches.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from dataclasses import dataclass, field

_METHODS = (b"GET ", b"PUT ", b"POST ", b"HEAD ", b"DELETE ", b"PATCH ")


@dataclass
class Injected:
    requests: int = 0
    resets: int = 0
    delays: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a crashed load balancer or a dropped NAT entry does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultProxy:
    """``with FaultProxy(("127.0.0.1", port), reset_rate=0.1) as proxy: use proxy.endpoint``."""

    def __init__(self, target: tuple[str, int], reset_rate: float = 0.0, delay_rate: float = 0.0,
                 delay_s: float = 0.2, seed: int = 0) -> None:
        self.target = target
        self.reset_rate, self.delay_rate, self.delay_s = reset_rate, delay_rate, delay_s
        self.injected = Injected()
        self._rng = random.Random(seed)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="fault-proxy")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _draw(self) -> str:
        with self.injected.lock:
            self.injected.requests += 1
            r = self._rng.random()
            if r < self.reset_rate:
                self.injected.resets += 1
                return "reset"
            if r < self.reset_rate + self.delay_rate:
                self.injected.delays += 1
                return "delay"
            return "pass"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                _reset(client)
                continue
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client and data.startswith(_METHODS):
                    action = self._draw()
                    if action == "reset":
                        _reset(src)
                        _reset(dst)
                        return
                    if action == "delay":
                        self._stop.wait(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
