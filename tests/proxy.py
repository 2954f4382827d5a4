"""A TCP relay on loopback that can go silent, to stall a real dependency."""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class FreezableProxy:
    """Relays a free loopback port to `upstream`; `freeze` stops all traffic.

    Frozen, it keeps every connection open and accepts new ones, but passes
    no byte either way: a server, pooler or network that went silent. With
    `freeze_on`, it freezes by itself when a client sends those bytes.
    """

    def __init__(
        self, upstream: tuple[str, int], freeze_on: bytes | None = None
    ) -> None:
        self.upstream = upstream
        self.freeze_on = freeze_on
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
        self.freeze_on = None
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
            for source, target, watch in (
                (client, server, True),
                (server, client, False),
            ):
                thread = threading.Thread(
                    target=self._pump, args=(source, target, watch), daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, target: socket.socket, watch: bool) -> None:
        pending = b""
        while not self._stopped.is_set():
            if not self._flowing.wait(timeout=0.1):
                continue

            try:
                if pending:
                    target.sendall(pending)
                    pending = b""

                readable, _, _ = select.select([source], [], [], 0.1)
                if not readable or not self._flowing.is_set():
                    continue

                data = source.recv(65536)
                if not data:
                    break

                trigger = self.freeze_on
                if watch and trigger is not None and trigger in data:
                    # Held back, sent once thawed, as a silent peer would.
                    self.freeze()
                    pending = data
                    continue

                target.sendall(data)
            except OSError:
                break

        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
