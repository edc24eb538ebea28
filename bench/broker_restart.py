#!/usr/bin/python3
"""Loss window of a mosquitto restart (persistence true) under QoS 1 load.

mosquitto 2.0 does not restore shared subscriptions from its database, so a
shared-route message published after the restart and before the workers
re-subscribe reaches nobody. This measures how long that window is and how
many messages it costs, for docs/delivery.md.

usage: bench/broker_restart.py [--bin build/routemq] [--n 15000] [--rate 1000] [--restart-at 5] [--down 0]
"""
import argparse
import glob
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timezone

import paho.mqtt.client as mqtt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return time.time()
        except OSError:
            time.sleep(0.005)
    raise RuntimeError("mosquitto did not start")


def log_times(path, pattern):
    out = []
    for line in open(path, errors="replace"):
        if re.search(pattern, line):
            ts = datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc)
            out.append(ts.timestamp())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/routemq"))
    ap.add_argument("--n", type=int, default=15000)
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--restart-at", type=float, default=5)
    ap.add_argument("--down", type=float, default=0, help="seconds the broker stays down")
    a = ap.parse_args()

    d = tempfile.mkdtemp(prefix="routemq-restart.")
    os.chmod(d, 0o777)
    port = free_port()
    conf = os.path.join(d, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
                f"persistence true\npersistence_location {d}/\nautosave_interval 1\n")
    broker = subprocess.Popen(["/usr/sbin/mosquitto", "-c", conf], stderr=subprocess.DEVNULL)
    wait_port(port)
    tag = os.path.basename(d).split(".")[-1]
    env = dict(os.environ, MQTT_BROKER="127.0.0.1", MQTT_PORT=str(port), E2E_OUT=d, E2E_SHARED_WORKERS="2",
               MQTT_CLIENT_ID="r" + tag, MQTT_GROUP_NAME="g" + tag, ROUTEMQ_RUN_DIR=d + "/run")
    log = open(os.path.join(d, "routemq.log"), "w")
    rmq = subprocess.Popen([a.bin, "run", "--app", os.path.join(ROOT, "spec/e2e/apps/basic")], env=env,
                           stdout=log, stderr=log, cwd=ROOT)
    try:
        end = time.time() + 15
        while len(log_times(log.name, "connected to")) < 2 and time.time() < end:
            time.sleep(0.05)

        pub = mqtt.Client(client_id="pub" + tag, clean_session=False)
        pub.max_inflight_messages_set(1000)
        pub.max_queued_messages_set(0)
        pub.reconnect_delay_set(0.05, 0.2)
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        start = time.time()
        restarted = up = None
        for i in range(1, a.n + 1):
            pub.publish("shared/1", str(i), qos=1)
            now = time.time()
            if restarted is None and now - start >= a.restart_at:
                broker.send_signal(signal.SIGTERM)
                broker.wait()
                restarted = time.time()
                time.sleep(a.down)
                broker = subprocess.Popen(["/usr/sbin/mosquitto", "-c", conf], stderr=subprocess.DEVNULL)
                up = wait_port(port)
            delay = start + i / a.rate - time.time()
            if delay > 0:
                time.sleep(delay)
        end = time.time() + 30
        while pub._out_messages and time.time() < end:  # noqa: SLF001 (paho has no public "drained")
            time.sleep(0.1)
        pub.loop_stop()
        time.sleep(5)

        seen = {}
        for path in glob.glob(os.path.join(d, "*.rec")):
            for line in open(path, errors="replace"):
                parts = line.split("\t")
                if len(parts) >= 2:
                    seen[parts[1]] = seen.get(parts[1], 0) + 1
        lost = sum(1 for i in range(1, a.n + 1) if str(i) not in seen)
        dups = sum(c - 1 for c in seen.values() if c > 1)
        back = [t for t in log_times(log.name, "connected to") if t > restarted]
        # One subscribed member is enough for the share group to be served again.
        window = back[0] - up if back else float("nan")
        print(f"{a.bin}: {a.n} published at {a.rate:.0f}/s, broker restarted after {a.restart_at:.0f} s "
              f"(down {up - restarted:.2f} s): the first worker subscribed again {window:.2f} s after it was back; "
              f"{lost} lost, {dups} duplicated")
    finally:
        rmq.send_signal(signal.SIGTERM)
        try:
            rmq.wait(20)
        except subprocess.TimeoutExpired:
            rmq.kill()
        broker.send_signal(signal.SIGTERM)
        broker.wait()


if __name__ == "__main__":
    main()
