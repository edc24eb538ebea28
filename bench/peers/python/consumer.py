"""Benchmark peer: the consumer a Python user would write with paho-mqtt.

It does what the routemq benchmark handler does (parse the JSON payload, read
"seq", count) and reports like bench/bench_sub.c, so bench/run.lua drives all
of them alike:
  subscribed_ns=T                 once the SUBACK is in
  count=N first_ns=T last_ns=T cpu_us=U cpu_total_us=U rss_kb=K
(realtime ns of the first and last message counted; cpu_us: this process's
user+system CPU from the SUBACK to the last message; rss_kb: VmRSS at the
end). Exit 0 when N messages were counted.

Run it with Debian's interpreter, /usr/bin/python3, which finds Debian's
python3-paho-mqtt (a pyenv python3 on PATH would not).

Usage: /usr/bin/python3 consumer.py -p PORT -n N [-h HOST] [-q QOS]
           [-f FILTER] [-t TIMEOUT_S] [-I IDLE_S] [-w WAIT_MS] [-R]
-w: the handler sleeps WAIT_MS before counting: paho calls handlers on its
    one network thread, so messages are handled one at a time.
-R: responder: replies to each message on its MQTT 5 response topic with its
    correlation data (request/reply latency), and never exits by count.
"""
import getopt
import json
import os
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes


def usage():
    sys.stderr.write("usage: consumer.py -p PORT -n N [-h HOST] [-q 0|1] [-f FILTER] "
                     "[-t TIMEOUT_S] [-I IDLE_S] [-w WAIT_MS] [-R]\n")
    sys.exit(2)


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_us():
    return time.process_time_ns() // 1000


class State:
    def __init__(self, want, qos, filt):
        self.want, self.qos, self.filter = want, qos, filt
        self.count = 0
        self.first_ns = self.last_ns = 0
        self.cpu_sub = self.cpu_last = 0
        self.subscribed = False
        self.failed = False
        self.last_seen = time.monotonic()


def main():
    try:
        opts, _ = getopt.getopt(sys.argv[1:], "h:p:n:q:f:t:I:w:R")
    except getopt.GetoptError:
        usage()
    host, port, want, qos, filt = "127.0.0.1", 0, 200000, 0, "sensors/+/data"
    timeout_s, idle_s, wait_ms, reply = 120.0, 10.0, 0.0, False
    for k, v in opts:
        if k == "-h":
            host = v
        elif k == "-p":
            port = int(v)
        elif k == "-n":
            want = int(v)
        elif k == "-q":
            qos = int(v)
        elif k == "-f":
            filt = v
        elif k == "-t":
            timeout_s = float(v)
        elif k == "-I":
            idle_s = float(v)
        elif k == "-w":
            wait_ms = float(v)
        elif k == "-R":
            reply = True
    if port <= 0 or want < 1:
        usage()

    st = State(want, qos, filt)

    def on_connect(client, userdata, flags, rc, properties=None):
        if rc != 0:
            sys.stderr.write("consumer.py: connection refused: %s\n" % rc)
            st.failed = True
            return
        client.subscribe(st.filter, qos=st.qos)

    def on_subscribe(client, userdata, mid, granted, properties=None):
        if not granted or granted[0].value >= 0x80:
            sys.stderr.write("consumer.py: subscription refused\n")
            st.failed = True
            return
        st.subscribed = True
        st.last_seen = time.monotonic()
        st.cpu_sub = cpu_us()
        sys.stdout.write("subscribed_ns=%d\n" % time.time_ns())
        sys.stdout.flush()

    def counted():
        now = time.time_ns()
        if st.count == 0:
            st.first_ns = now
        st.last_ns = now
        st.last_seen = time.monotonic()
        st.count += 1
        if st.count == st.want:
            st.cpu_last = cpu_us()

    def on_message(client, userdata, msg):
        doc = json.loads(msg.payload)
        _ = doc["seq"]
        if wait_ms > 0:
            time.sleep(wait_ms / 1000.0)
        counted()

    def on_request(client, userdata, msg):
        props = getattr(msg, "properties", None)
        topic = getattr(props, "ResponseTopic", None)
        if topic:
            out = Properties(PacketTypes.PUBLISH)
            corr = getattr(props, "CorrelationData", None)
            if corr is not None:
                out.CorrelationData = corr
            client.publish(topic, msg.payload, qos=st.qos, properties=out)
        counted()

    client = mqtt.Client(client_id="bench-python-%d" % os.getpid(), protocol=mqtt.MQTTv5)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_request if reply else on_message
    try:
        client.connect(host, port, keepalive=60, clean_start=True)
    except OSError as e:
        sys.stderr.write("consumer.py: cannot connect to %s:%d: %s\n" % (host, port, e))
        return 1

    start = time.monotonic()
    # What loop_forever() does, with the benchmark's count, idle and time
    # bounds checked between rounds.
    while not st.failed and (reply or st.count < st.want):
        rc = client.loop(timeout=0.2)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            break
        now = time.monotonic()
        if now - start > timeout_s:
            break
        if st.subscribed and now - st.last_seen > idle_s:
            break
    if st.count < st.want:
        st.cpu_last = cpu_us()
    sys.stdout.write("count=%d first_ns=%d last_ns=%d cpu_us=%d cpu_total_us=%d rss_kb=%d\n" % (
        st.count, st.first_ns, st.last_ns, st.cpu_last - st.cpu_sub, st.cpu_last, rss_kb()))
    sys.stdout.flush()
    client.disconnect()
    return 0 if st.count >= st.want else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(1)
