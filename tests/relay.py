"""A TCP relay in front of a test server that observes what a client does: how
many requests wait for an answer at once, and how many bytes go each way."""

from __future__ import annotations

import contextlib
import socket
import threading


class Relay:
    """Forwards TCP connections to ``port``; ``most`` is the largest number of
    requests it saw waiting for their answer at the same moment (a request is
    waiting from its first byte until the first byte of the answer); ``sent``
    and ``received`` count the bytes each way."""

    def __init__(self, port: int):
        self.target = port
        self.sent = 0  # bytes from the client to the server
        self.received = 0  # bytes from the server to the client
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.most = 0
        self._waiting: set[int] = set()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self._sockets += [client, upstream]
            for a, b, asking in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, asking, id(client)),
                                 daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, asking: bool, conn: int) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 20):
                with self._lock:
                    if asking:
                        self.sent += len(data)
                    else:
                        self.received += len(data)
                    if asking:
                        self._waiting.add(conn)
                        self.most = max(self.most, len(self._waiting))
                    else:
                        self._waiting.discard(conn)
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.server.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
