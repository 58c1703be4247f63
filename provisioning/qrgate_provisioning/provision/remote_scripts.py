"""Small Python programs the provisioner runs on the gate, each printing one JSON object on stdout.

They are sent over stdin (``python3 - ARGS``), so nothing is copied onto the gate to run them. ``FACTS`` needs only
the system's python3 (it runs before anything is installed); the others run with the gate's venv, as the service
user, and use qrgate's own code for what they report, so the gate is judged by the code that will run on it.
"""

from __future__ import annotations

# Facts about the target before anything changes. argv: root prefix, camera device (or ""), package names...
FACTS = r"""
import ctypes, ctypes.util, glob, json, os, platform, shutil, subprocess, sys
root = sys.argv[1]
packages = sys.argv[2:]
facts = {"machine": platform.machine(), "python": "%d.%d.%d" % sys.version_info[:3], "uid": os.getuid()}
release = {}
try:
    with open("/etc/os-release") as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if key:
                release[key] = value.strip('"')
except OSError:
    pass
facts["os_id"], facts["os_like"] = release.get("ID", ""), release.get("ID_LIKE", "")
facts["os_version"], facts["os_name"] = release.get("VERSION_ID", ""), release.get("PRETTY_NAME", "")
probe = root
while not os.path.isdir(probe) and probe != os.path.dirname(probe):
    probe = os.path.dirname(probe)
usage = shutil.disk_usage(probe)
facts["disk_dir"], facts["disk_free"], facts["disk_total"] = probe, usage.free, usage.total
facts["read_only"] = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
facts["video"] = sorted(glob.glob("/dev/video*") + glob.glob("/dev/media*"))
facts["gpio"] = sorted(glob.glob("/dev/gpiochip*"))
facts["systemd"] = os.path.isdir("/run/systemd/system")
try:
    with open("/proc/1/comm") as f:
        facts["pid1"] = f.read().strip()
except OSError:
    facts["pid1"] = "?"
clock = []
if os.path.exists("/run/systemd/timesync/synchronized"):
    clock.append("timesyncd")
if shutil.which("chronyc"):
    try:
        out = subprocess.run(["chronyc", "-n", "tracking"], capture_output=True, text=True, timeout=5).stdout
        if "Leap status     : Normal" in out and "Reference ID    : 00000000" not in out:
            clock.append("chrony")
    except (OSError, subprocess.SubprocessError):
        pass
class Timex(ctypes.Structure):  # the head of struct timex, then room for the rest (qrgate.clock.KernelSource)
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("rest", ctypes.c_char * 512)]
try:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    timex = Timex()
    if libc.adjtimex(ctypes.byref(timex)) != -1 and 0 <= timex.maxerror < 16000000:
        clock.append("kernel")
except (OSError, AttributeError, TypeError):
    pass
facts["clock"] = clock
installed = {}
if packages and shutil.which("dpkg-query"):
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *packages], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        name, _, status = line.partition(" ")
        installed[name] = status.endswith("install ok installed")
facts["packages"] = {name: installed.get(name, False) for name in packages}
facts["dpkg"] = bool(shutil.which("dpkg-query"))
facts["setpriv"] = bool(shutil.which("setpriv"))
print(json.dumps(facts))
"""

# The venv's state. Run with the venv's python; argv: the wheel stamp file.
VENV = r"""
import json, sys, sysconfig
from importlib import metadata
try:
    version = metadata.version("qrgate")
except metadata.PackageNotFoundError:
    version = None
try:
    with open(sys.argv[1]) as f:
        stamp = f.read().strip()
except OSError:
    stamp = ""
cfg = {}
try:
    with open(sys.prefix + "/pyvenv.cfg") as f:
        for line in f:
            key, _, value = line.partition("=")
            cfg[key.strip()] = value.strip()
except OSError:
    pass
print(json.dumps({"version": version, "stamp": stamp, "python": "%d.%d" % sys.version_info[:2],
                  "system_site": cfg.get("include-system-site-packages") == "true"}))
"""

# The signed lists in force, and the offer of new ones (files in a directory), with qrgate's own code.
# argv: state_dir signers_dir drop_dir [trust paths...]; imports drop_dir when it holds files.
TRUST = r"""
import json, os, sys, time
from qrgate.trust_updates import TrustUpdates
state_dir, signers_dir, drop_dir, *paths = sys.argv[1:]
updates = TrustUpdates.open(state_dir, signers_dir, paths)
answers = []
if os.path.isdir(drop_dir) and os.listdir(drop_dir):
    for path, answer in updates.import_directory(drop_dir, time.time()):
        answers.append({"file": os.path.basename(str(path)), "accepted": answer.accepted, "detail": answer.detail})
print(json.dumps({"trust_list_version": updates.version, "revocation_version": updates.revocation_version,
                  "answers": answers}))
"""

# The outbox: create it (as the service user, so it is theirs) when missing, and report what is pending.
# argv: outbox path, "create" or "read".
OUTBOX = r"""
import json, os, sys
from qrgate.outbox import Outbox
path, action = sys.argv[1], sys.argv[2]
if not os.path.exists(path) and action != "create":
    print(json.dumps({"exists": False, "pending": None}))
    raise SystemExit
with Outbox(path) as outbox:
    print(json.dumps({"exists": True, "pending": outbox.pending_count()}))
"""

# Clear a gate's retained topics with its own certificate (only it may write them). Run as root with the
# venv's python once the daemon is stopped. argv: config file.
CLEAR_RETAINED = r"""
import json, sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from qrgate import wire
from qrgate.config_file import load_config
from qrgate.uplink.tls import TlsSettings
config = load_config(sys.argv[1], demo=True)
device = config.device.id
topics = [wire.status_topic(device), wire.availability_topic(device)]
done, acked, failed = threading.Event(), [], []
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv5)
tls = TlsSettings.of(config.mqtt)
if tls is not None:
    client.tls_set_context(tls.context())
def on_publish(_c, _u, mid, reason, _p):
    (failed if reason.is_failure else acked).append(str(reason))
    if len(acked) + len(failed) == len(topics):
        done.set()
client.on_publish = on_publish
client.connect(config.mqtt.host, config.mqtt.port, keepalive=10)
client.loop_start()
for topic in topics:
    client.publish(topic, b"", qos=1, retain=True)
done.wait(10)
client.disconnect()
client.loop_stop()
print(json.dumps({"cleared": topics if not failed and done.is_set() else [], "failed": failed}))
"""
