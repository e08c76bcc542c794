"""A real Redis (Debian's redis-server) on a free loopback port, in memory only."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time

import redis

from .dovecot import free_port

REDIS_SERVER = "/usr/bin/redis-server"


class RedisServer:
    """`with RedisServer() as server:` -> server.url (redis://127.0.0.1:PORT/0)."""

    host = "127.0.0.1"

    def __enter__(self) -> RedisServer:
        if not shutil.which(REDIS_SERVER):
            raise RuntimeError(f"{REDIS_SERVER} not found: run scripts/test.sh, which installs it.")
        self.port = free_port()
        self.url = f"redis://{self.host}:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="threadline-redis-")
        self._process = subprocess.Popen(
            [REDIS_SERVER, "--bind", self.host, "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", self._dir.name, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        client = redis.Redis(host=self.host, port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        self._dir.cleanup()
