"""Connecting to Ray: import it lazily, start a local instance or join a cluster.

Ray is an optional dependency (extra ``ray``); every function here imports it on call so that
``import optkit_ray`` stays cheap and works without Ray installed.
"""

from __future__ import annotations

import socket
import threading
from types import ModuleType
from typing import Any

from optkit.errors import ConfigError, OptkitError

LOCAL_ADDRESSES = (None, "", "local")
"""``address`` values that start a local Ray instance when none is running in this process."""


def import_ray() -> ModuleType:
    """``import ray`` with an error that says what to install."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise OptkitError(
            "the 'ray' executor needs Ray: pip install 'optkit[ray]' (or pip install 'ray>=2.40')"
        ) from exc
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """``"host:port"`` / ``"ray://host:port"`` -> ``(host, port)``; ``None`` if not that form."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def probe(address: str, timeout_s: float) -> None:
    """Fail fast, with the address in the message, when ``host:port`` takes no TCP connection.

    ``ray.init`` on an unreachable address retries for a long time before it gives up; a plain
    socket connect answers within ``timeout_s``.
    """
    hp = _host_port(address)
    if hp is None:
        raise ConfigError(
            f"executor 'ray': address {address!r} is not valid; use 'auto' (the cluster started"
            " with `ray start --head` on this machine), 'host:port' of the head node's GCS"
            " (default port 6379), 'ray://host:10001' (Ray Client) or leave it unset to start a"
            " local instance"
        )
    try:
        with socket.create_connection(hp, timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConfigError(
            f"executor 'ray': cannot reach the Ray cluster at address {address!r} ({exc});"
            " is `ray start --head` running there and the port open? Leave 'address' unset to"
            " start a local Ray instance instead"
        ) from exc


def connect(
    address: str | None,
    *,
    connect_timeout_s: float = 10.0,
    init_kwargs: dict[str, Any] | None = None,
) -> ModuleType:
    """Make sure this process is connected to Ray and return the ``ray`` module.

    Args:
        address: ``None`` / ``"local"``: reuse the connection of this process or start a local
            instance; ``"auto"``: join the cluster running on this machine (``ray start``);
            ``"host:port"`` / ``"ray://host:port"``: join that cluster.
        connect_timeout_s: seconds the TCP probe of an explicit address may take.
        init_kwargs: extra ``ray.init`` arguments when a new connection is made.

    Raises:
        ConfigError: the address is unreachable, malformed, or differs from the cluster this
            process is already connected to.
    """
    with _CONNECTING:  # searches launch their trials from several threads at once
        return _connect(address, connect_timeout_s, init_kwargs)


_CONNECTING = threading.Lock()


def _connect(
    address: str | None, connect_timeout_s: float, init_kwargs: dict[str, Any] | None
) -> ModuleType:
    ray = import_ray()
    explicit = address not in LOCAL_ADDRESSES and address != "auto"
    if explicit:
        assert address is not None
        probe(address, connect_timeout_s)
    if ray.is_initialized():
        if explicit:
            current = ray.get_runtime_context().gcs_address
            if _host_port(str(address)) != _host_port(current) and not str(address).startswith(
                "ray://"
            ):
                raise ConfigError(
                    f"executor 'ray': this process is already connected to the Ray cluster at"
                    f" {current!r}; it cannot also join {address!r} (one cluster per process)"
                )
        return ray
    kwargs: dict[str, Any] = dict(init_kwargs or {})
    try:
        if address in LOCAL_ADDRESSES:
            kwargs.setdefault("include_dashboard", False)
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    except ConnectionError as exc:
        raise ConfigError(
            f"executor 'ray': cannot connect to a Ray cluster at address {address!r}:"
            f" {str(exc).rstrip('.')}."
            " Start one with `ray start --head`, give its 'host:port', or leave 'address' unset"
            " to start a local instance"
        ) from exc
    return ray
