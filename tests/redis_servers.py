"""Private redis-server processes for tests that stop, restart or cluster Redis.

The shared test Redis is never stopped: these run on their own loopback ports.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from tests.services import unavailable


def redis_binary(name: str = "redis-server") -> str:
    path = shutil.which(name)
    if path is None:
        unavailable("redis", FileNotFoundError(name))

    assert path is not None
    return path


def port_pair_free(port: int) -> bool:
    """A cluster node needs its port and the bus port 10000 above it."""
    for candidate in (port, port + 10000):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                return False

    return True


def cluster_ports(count: int, start: int = 21000) -> list[int]:
    ports: list[int] = []
    port = start
    while len(ports) < count and port < 30000:
        if port_pair_free(port):
            ports.append(port)

        port += 7

    return ports


class RedisServer:
    """One redis-server on a loopback port, keeping nothing on disk."""

    def __init__(self, port: int, workdir: Path, cluster: bool = False) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.workdir = workdir
        self.cluster = cluster
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        args = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
        ]  # fmt: skip
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{self.port}.conf",
            ]  # fmt: skip

        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                time.sleep(0.05)

        pytest.fail(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def make_cluster(ports: list[int], workdir: Path) -> list[RedisServer]:
    """Three masters, no replicas, slots spread by redis-cli."""
    nodes = [RedisServer(port, workdir, cluster=True) for port in ports]
    addresses = [f"127.0.0.1:{port}" for port in ports]
    create = [redis_binary("redis-cli"), "--cluster", "create", *addresses]
    subprocess.run(
        [*create, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    client = redis.RedisCluster(host="127.0.0.1", port=ports[0])
    deadline = time.monotonic() + 20
    while client.cluster_info().get("cluster_state") != "ok":
        if time.monotonic() > deadline:
            pytest.fail("the Redis cluster did not become ready")

        time.sleep(0.2)

    client.close()
    return nodes


class Sentinel:
    """A redis-server in sentinel mode watching `master` as service `mymaster`."""

    def __init__(self, port: int, master: RedisServer, workdir: Path) -> None:
        self.port = port
        self.url = f"redis+sentinel://127.0.0.1:{port}/mymaster"
        config = workdir / f"sentinel-{port}.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\n"
            f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n",
            encoding="utf-8",
        )
        self.process = subprocess.Popen(
            [redis_binary(), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.sentinel_get_master_addr_by_name("mymaster"):
                    client.close()
                    return
            except redis.RedisError:
                pass

            time.sleep(0.1)

        self.stop()
        pytest.fail("redis sentinel did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class BlackHole:
    """A listening socket that accepts connections and never answers."""

    def __init__(self) -> None:
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return

            self._held.append(connection)

    def close(self) -> None:
        self._server.close()
        for connection in self._held:
            connection.close()
