"""Two RabbitMQ 3.10 nodes on loopback, clustered, for the provincial-tier trial (rabbitmq_trial.py): each node a
child process with its own epmd, cookie, ports and data in a temporary directory; ``cluster`` starts a pair of a
queue variant and joins B to A with ``rabbitmqctl join_cluster``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from qrgate_tools.broker import free_loopback_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")  # the scripts themselves: /usr/sbin's wrappers switch to user rabbitmq
# One scheduler and no busy-waiting: the machine is shared. Erlang distribution on loopback only.
_ERL_ARGS = "+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none -kernel inet_dist_use_interface {127,0,0,1}"
_BOOT_TIMEOUT_S = 240.0  # a restarted node spends 100 s in the MQTT plugin's start (measured) before it listens
KILL_VARIANTS = ("classic", "quorum", "mirrored", "amqp")


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        time.sleep(step)
    return condition()


def port_answers(port: int) -> bool:
    with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class Node:
    """One RabbitMQ node, ``rabbit-<letter>@localhost``, with its own AMQP, MQTT and distribution ports."""

    def __init__(self, root: Path, letter: str, env: dict[str, str]) -> None:
        self.letter, self.dir, self.nodename = letter, root / f"node-{letter}", f"rabbit-{letter}@localhost"
        self.amqp_port, self.mqtt_port, dist_port = (free_loopback_port() for _ in range(3))
        self.env = {**env, "RABBITMQ_NODENAME": self.nodename, "RABBITMQ_NODE_PORT": str(self.amqp_port),
                    "RABBITMQ_DIST_PORT": str(dist_port), "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(self.dir / "log"), "RABBITMQ_PID_FILE": str(self.dir / "pid"),
                    "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
                    "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
                    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": _ERL_ARGS}
        self._process: subprocess.Popen[bytes] | None = None

    def configure(self, variant: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
                                                f"mqtt.listeners.tcp.default = 127.0.0.1:{self.mqtt_port}\n"
                                                "loopback_users = none\n")
        quorum = "{durable_queue_type, quorum}" if variant == "quorum" else ""
        (self.dir / "advanced.config").write_text(f"[{{rabbitmq_mqtt, [{quorum}]}}].\n")

    def start(self) -> None:
        (self.dir / "pid").unlink(missing_ok=True)
        with open(self.dir / "server.out", "ab") as out:
            self._process = subprocess.Popen([str(RABBITMQ_BIN / "rabbitmq-server")], env=self.env, stdout=out,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True)

    def wait_ready(self) -> None:
        """Ready when the MQTT listener answers: the plugin starts last, once the node has booted."""
        if not wait_for(lambda: port_answers(self.mqtt_port) or not self.running, _BOOT_TIMEOUT_S, 0.3) \
                or not self.running:
            raise RuntimeError(f"{self.nodename} did not start; see {self.dir / 'log'}")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def ctl(self, *args: str) -> str:
        done = subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.nodename, *args], check=False,
                              env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.nodename}: {done.stderr.strip()}")
        return done.stdout

    def kill(self) -> None:
        """SIGKILL the Erlang VM itself (the pid file's: the start script is only its parent), reap the script."""
        with suppress(OSError, ValueError):
            os.kill(int((self.dir / "pid").read_text().strip()), signal.SIGKILL)
        if self._process is not None:
            with suppress(subprocess.TimeoutExpired):
                self._process.wait(15)
            if self._process.poll() is None:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._process = None


@contextmanager
def cluster(root: Path, variant: str) -> Iterator[tuple[Node, Node]]:
    """Nodes A and B, booted side by side, B joined to A; both and their epmd killed on exit. MQTT sessions are
    classic queues on the client's node (RabbitMQ's default; ``classic``), quorum queues (``quorum``: advanced.config,
    rabbitmq.conf has no key for it in 3.10) or classic queues mirrored by a policy (``mirrored``, ``amqp``)."""
    home = root / "home"
    home.mkdir(parents=True)
    (home / ".erlang.cookie").write_text(os.urandom(16).hex())
    (home / ".erlang.cookie").chmod(0o400)
    (root / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
    epmd_port = free_loopback_port()
    env = {**os.environ, "HOME": str(home), "ERL_EPMD_PORT": str(epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins")}
    epmd = subprocess.Popen(["epmd", "-port", str(epmd_port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    a, b = nodes = (Node(root, "a", env), Node(root, "b", env))
    try:
        for node in nodes:
            node.configure(variant)
            node.start()
        for node in nodes:
            node.wait_ready()
        for command in (("stop_app",), ("reset",), ("join_cluster", a.nodename), ("start_app",)):
            b.ctl(*command)
        b.wait_ready()
        if variant in ("mirrored", "amqp"):
            a.ctl("set_policy", "--apply-to", "queues", "mqtt-mirrored", "^mqtt-subscription-",
                  '{"ha-mode":"all","ha-sync-mode":"automatic"}')
        yield a, b
    finally:
        for node in nodes:
            node.kill()
        epmd.kill()
        epmd.wait()


