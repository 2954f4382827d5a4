"""A TCP relay on loopback that can go silent, to stall a real dependency."""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class FreezableProxy:
    """Relays a free loopback port to `upstream`; `freeze` stops all traffic.

    Frozen, it keeps every connection open and accepts new ones, but passes
    no byte either way: a server, pooler or network that went silent.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._stopped.set()
        self._flowing.set()
        for thread in self._threads:
            thread.join(timeout=5)

        for sock in [self._listener, *self._sockets]:
            sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue

            server = socket.create_connection(self.upstream, timeout=5)
            self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                thread = threading.Thread(
                    target=self._pump, args=(source, target), daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        while not self._stopped.is_set():
            if not self._flowing.wait(timeout=0.1):
                continue

            readable, _, _ = select.select([source], [], [], 0.1)
            if not readable or not self._flowing.is_set():
                continue

            try:
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
            except OSError:
                break

        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
