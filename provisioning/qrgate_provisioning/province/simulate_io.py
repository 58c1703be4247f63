"""Many paho MQTT clients driven from one thread: paho's external-loop API over one ``selectors`` selector.

paho's own ``loop_start()`` gives every client a thread; for the simulator's thousands of gates that is thousands
of stacks fighting over one GIL. Here each client's socket is registered when paho opens it (``on_socket_open``)
and removed when paho closes it (``on_socket_close``); ``poll`` calls ``loop_read()`` on the readable ones and
``loop_write()`` on the writable ones, and ``flush`` writes what paho queued inside its callbacks (there it only
queues) and watches for writability only while the kernel has not taken everything. Keep-alives are the owner's
``loop_misc()`` calls. Other things the loop waits on (a control pipe) are ``watch``ed with a callback, and
``wake`` interrupts a ``poll`` from another thread.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from qrgate import wire

from ..errors import ProvinceError
from .settings import BrokerSettings


def raise_open_files(needed: int) -> int:
    """Raise this process's RLIMIT_NOFILE to ``needed`` if it is lower; the limit in force. ProvinceError when the
    hard limit does not allow it, naming how to raise that one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed if soft == resource.RLIM_INFINITY else soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ProvinceError(
            f"simulating these gates needs {needed} open files and this process may open at most {hard} (the hard "
            "RLIMIT_NOFILE): raise it (ulimit -Hn as root, LimitNOFILE= in a systemd unit, or "
            "/etc/security/limits.conf), or run fewer gates per process (--processes)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


def tls_context_of(broker: BrokerSettings) -> ssl.SSLContext | None:
    """One TLS context for every simulated gate (loading the CA per client is seconds of CPU for thousands), or
    None for plain MQTT. Every gate presents ``broker.cert_file``: a broker that maps certificates to device ids
    (use_identity_as_username) would need one per gate, which a load test does not have."""
    if broker.ca_file is None:
        return None
    try:
        context = ssl.create_default_context(cafile=str(broker.ca_file))
        if broker.cert_file is not None:
            context.load_cert_chain(str(broker.cert_file), str(broker.key_file) if broker.key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ProvinceError(f"broker TLS files: cannot load them: {exc}") from exc
    return context


def password_of(broker: BrokerSettings) -> str | None:
    if broker.password_file is None:
        return None
    try:
        return broker.password_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ProvinceError(f"broker.password_file: cannot read {broker.password_file}: {exc}") from exc


def gate_client(device_id: str, index: int, broker: BrokerSettings, tls_context: ssl.SSLContext | None,
                password: str | None) -> mqtt.Client:
    """A paho client as a gate's: MQTT 5, its device id as client id, the will ``offline`` (retained) on its
    availability topic; ``index`` is its userdata (what the callbacks are told)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5, userdata=index,
                         reconnect_on_failure=False)
    client.connect_timeout = 5.0
    if tls_context is not None:
        client.tls_set_context(tls_context)
    if broker.username is not None:
        client.username_pw_set(broker.username, password)
    client.will_set(wire.availability_topic(device_id), wire.OFFLINE, qos=wire.QOS, retain=True)
    return client


class ClientLoop:
    """The sockets of ``clients`` (by index) in one selector, and what else the loop waits on."""

    def __init__(self, clients: list[mqtt.Client]) -> None:
        self._clients = clients
        self._writing = [False] * len(clients)  # registered for EVENT_WRITE
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._on_wake: Callable[[], None] = lambda: None
        self._selector.register(self._wake_read, selectors.EVENT_READ, self._woken)

    # --- paho's socket callbacks, called by the owner's on_socket_open / on_socket_close -----------------------

    def opened(self, index: int, sock: Any) -> None:
        if isinstance(sock, socket.socket):  # TLS sockets are too
            # Each packet at once, as the gate's uplink does: they are small and each waits for an answer.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._selector.register(sock, selectors.EVENT_READ, index)
        self._writing[index] = False

    def closed(self, sock: Any) -> None:
        # already gone when close() below took it first
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    # --- the loop --------------------------------------------------------------------------------------------

    def watch(self, fileobj: Any, callback: Callable[[], None]) -> None:
        """Call ``callback`` when ``fileobj`` (a socket, a multiprocessing connection) is readable."""
        self._selector.register(fileobj, selectors.EVENT_READ, callback)

    def unwatch(self, fileobj: Any) -> None:
        self._selector.unregister(fileobj)

    def on_wake(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` in the loop's thread after each ``wake()``."""
        self._on_wake = callback

    def wake(self) -> None:
        """Interrupt ``poll`` (from any thread)."""
        with contextlib.suppress(OSError):  # the loop has ended and closed it
            self._wake_write.send(b"\0")

    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds, then serve whatever is ready."""
        for key, events in self._selector.select(timeout):
            if callable(key.data):
                key.data()
                continue
            index: int = key.data
            client = self._clients[index]
            if events & selectors.EVENT_READ:
                client.loop_read()
                sock = client.socket()
                while isinstance(sock, ssl.SSLSocket) and sock.pending() and client.socket() is sock:
                    client.loop_read()  # TLS holds decrypted bytes the socket will not signal again
            if events & selectors.EVENT_WRITE and client.socket() is not None:
                client.loop_write()
            self.flush(index)

    def flush(self, index: int) -> None:
        """Write what paho queued for client ``index``; watch for writability only while some remains."""
        client = self._clients[index]
        sock = client.socket()
        if sock is None:
            return
        if client.want_write():
            client.loop_write()
        if client.socket() is not sock:
            return  # the write found the connection lost: paho closed (and we unregistered) the socket
        want = client.want_write()
        if want != self._writing[index]:
            self._writing[index] = want
            self._selector.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0), index)

    def drive_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Poll until ``done()`` or ``timeout`` seconds; whether it was done."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline:
                return False
            self.poll(0.05)
        return True

    def close(self) -> None:
        """Close every socket still open (without DISCONNECT) and the selector."""
        for client in self._clients:
            sock = client.socket()
            if sock is not None:
                self.closed(sock)
                sock.close()
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()

    def _woken(self) -> None:
        self._wake_read.recv(4096)
        self._on_wake()
