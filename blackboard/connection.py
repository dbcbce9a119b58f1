"""Board URLs to Redis clients.

memory://[name]                          in-process fakeredis with Lua; one server per name
redis://[user:pass@]host:port[/db]       a Redis server (rediss:// for TLS, unix:// sockets)
redis+sentinel://host:port[,host:port]/service[/db]
redis+cluster://host:port[,host:port]    Redis Cluster, from any seed nodes
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import unquote, urlsplit

import fakeredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

from blackboard.errors import InvalidURL

SCHEMES = ("memory", "redis", "rediss", "unix", "redis+sentinel", "redis+cluster")

LOOPBACK = ("127.0.0.1", "localhost", "::1")  # host names that mean this machine
SOCKET_TIMEOUT = 30.0
# Blocking reads (BLPOP, XREAD BLOCK) wait at most this long, under the socket timeout.
MAX_BLOCK = 20.0

_memory_servers: dict[str, fakeredis.FakeServer] = {}
# Connections per client (board handle), per node on a cluster. Commands that don't block wait
# their turn for one of MAX_IN_FLIGHT slots (Board.retrying), so however many agents a handle
# serves they never run a pool dry; the rest of the pool is for blocking reads (a waker's BLPOP
# per shard, event streams), which hold a connection for up to MAX_BLOCK.
MAX_CONNECTIONS = 2000
MAX_IN_FLIGHT = 256


def _sha1hex(data: bytes | str) -> bytes:
    """Redis's `redis.sha1hex` for fakeredis's Lua: the hex SHA-1 of a string."""
    return hashlib.sha1(data.encode() if isinstance(data, str) else data).hexdigest().encode()


def _memory_server(name: str) -> fakeredis.FakeServer:
    """The in-process server called `name`, its Lua given the `redis.sha1hex` that real Redis
    has and fakeredis lacks (the audit log's hash chain uses it).

    fakeredis builds one Lua runtime per server, with a global `redis` table, on its first
    script; the function is added to that table once it exists.
    """
    server = _memory_servers.get(name)
    if server is None:
        server = fakeredis.FakeServer()
        fakeredis.FakeRedis(server=server).eval("return 1", 0)  # makes the server's runtime
        runtime = getattr(server, "_lua_runtime", None)
        if runtime is None:  # pragma: no cover - a fakeredis that builds its Lua differently
            raise RuntimeError("this fakeredis version keeps no per-server Lua runtime; pin 2.40")
        runtime.globals()[b"redis"][b"sha1hex"] = _sha1hex
        _memory_servers[name] = server
    return server


def hosts(netloc: str, url: str) -> list[tuple[str, int]]:
    """The host:port pairs of a URL's network location (after any user:password@)."""
    found = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidURL("url", f"expected host:port pairs in {url!r}, got {part!r}")
        found.append((host.strip("[]"), int(port)))
    return found


def _auth(netloc: str) -> dict[str, Any]:
    if "@" not in netloc:
        return {}
    userinfo = netloc.rsplit("@", 1)[0]
    user, _, password = userinfo.partition(":")
    return {"username": unquote(user) or None, "password": unquote(password) or None}


def connect(url: str) -> Any:
    """A redis.asyncio client (or fakeredis, or RedisCluster) for `url`. Does no I/O."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidURL("url", f"expected a URL such as memory:// or redis://host:6379, got {url!r}")
    parts = urlsplit(url)
    scheme = parts.scheme
    common: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": 5.0}
    if scheme == "memory":
        name = (parts.netloc + parts.path).strip("/") or "default"
        return fakeredis.FakeAsyncRedis(server=_memory_server(name))
    if scheme in ("redis", "rediss", "unix"):
        try:
            # redis-py's default cap of 100 connections fails ("Too many connections") when 100
            # handlers finish at once; a daemon's concurrency is the real bound.
            return aioredis.from_url(url, health_check_interval=15, max_connections=MAX_CONNECTIONS, **common)
        except ValueError as e:
            raise InvalidURL("url", f"{e} in {url!r}") from None
    if scheme == "redis+sentinel":
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise InvalidURL("url", f"expected /service after the sentinel hosts in {url!r}")
        db = int(path[1]) if len(path) > 1 and path[1].isdigit() else 0
        sentinel = Sentinel(hosts(parts.netloc, url), **_auth(parts.netloc), **common)  # type: ignore[no-untyped-call]
        return sentinel.master_for(path[0], db=db, **common)
    if scheme == "redis+cluster":
        nodes = [ClusterNode(h, p) for h, p in hosts(parts.netloc, url)]
        # redis-py's cluster pools hold 100 connections per node and fail at once beyond that
        # (MaxConnectionsError), where the single-node pool above would be asked for more.
        return RedisCluster(
            startup_nodes=nodes, max_connections=MAX_CONNECTIONS, **_auth(parts.netloc), **common
        )
    raise InvalidURL("url", f"unsupported scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")


async def close(client: Any) -> None:
    """Close a client from `connect`, including a Sentinel client's connections to its sentinels."""
    await client.aclose()
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()
