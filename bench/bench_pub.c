/* Load generator: publishes N messages of ~60-byte JSON round-robin over
 * `sensors/<i>/data` (i < topics) at QoS 0, 1 or 2, as fast as the broker
 * takes them. QoS 0 writes until the socket is full, then waits for it to
 * drain; QoS 1 and 2 keep a window of unfinished messages. The network loop is
 * driven here (libmosquitto's socket API, no thread).
 *
 * Prints one line: first_publish_ns=... last_publish_ns=... done_ns=...
 * published=N acked=N (CLOCK_REALTIME ns). Exit 0 when every message was
 * written (QoS 0) or acknowledged (QoS 1 and 2), 1 on error or timeout.
 *
 * Usage: bench_pub -p PORT [-h HOST] [-n N] [-q QOS] [-T TOPICS] [-w WINDOW]
 *                  [-s FIRST_SEQ] [-V 311|5] [-i CLIENT_ID] [-t TIMEOUT_S] */
#include "bench_common.h"
#include "bench_net.h"

#include <errno.h>
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* PUBACKs arrive in bursts: many packets per wake-up. */
static int net_step(struct mosquitto *m, int ms) { return bench_net_step(m, ms, 512); }

typedef struct {
    int connected;
    int connack_rc;
    long acked;
} pub_state;

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
    pub_state *st = ud;
    st->connack_rc = rc;
    st->connected = rc == 0 ? 1 : -1;
}

static void on_publish(struct mosquitto *m, void *ud, int mid)
{
    ((pub_state *)ud)->acked++;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_pub -p PORT [-h HOST] [-n N] [-q 0|1|2] [-T TOPICS] [-w WINDOW] "
                    "[-s FIRST_SEQ] [-V 311|5] [-i CLIENT_ID] [-t TIMEOUT_S]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *client_id = NULL;
    int port = 0, qos = 0, topics = 100, window = 100, proto = 311, timeout_s = 120;
    long n = 200000, first_seq = 0;
    int opt;
    while ((opt = getopt(argc, argv, "h:p:n:q:T:w:s:V:i:t:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'n': n = atol(optarg); break;
        case 'q': qos = atoi(optarg); break;
        case 'T': topics = atoi(optarg); break;
        case 'w': window = atoi(optarg); break;
        case 's': first_seq = atol(optarg); break;
        case 'V': proto = atoi(optarg); break;
        case 'i': client_id = optarg; break;
        case 't': timeout_s = atoi(optarg); break;
        default: usage();
        }
    }
    if (port <= 0 || n < 0 || qos < 0 || qos > 2 || topics < 1 || window < 1 || timeout_s < 1 ||
        (proto != 311 && proto != 5))
        usage();

    char (*topic)[32] = calloc((size_t)topics, sizeof *topic);
    if (!topic) return 1;
    for (int i = 0; i < topics; i++) snprintf(topic[i], sizeof topic[i], "sensors/%d/data", i);

    char idbuf[64];
    if (!client_id) {
        snprintf(idbuf, sizeof idbuf, "bench-pub-%d", (int)getpid());
        client_id = idbuf;
    }
    pub_state st = { 0 };
    mosquitto_lib_init();
    struct mosquitto *m = mosquitto_new(client_id, true, &st);
    if (!m) { fprintf(stderr, "bench_pub: mosquitto_new failed\n"); return 1; }
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, proto == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    mosquitto_max_inflight_messages_set(m, (unsigned)window);
    mosquitto_int_option(m, MOSQ_OPT_SEND_MAXIMUM, window);
    mosquitto_connect_callback_set(m, on_connect);
    mosquitto_publish_callback_set(m, on_publish);

    int64_t deadline = bench_mono_ns() + (int64_t)timeout_s * 1000000000LL;
    int rc = mosquitto_connect(m, host, port, 60);
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "bench_pub: cannot connect to %s:%d: %s\n", host, port,
                rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        return 1;
    }
    while (st.connected == 0 && bench_mono_ns() < deadline) {
        rc = net_step(m, 100);
        if (rc != MOSQ_ERR_SUCCESS) break;
    }
    if (st.connected != 1) {
        fprintf(stderr, "bench_pub: no CONNACK from %s:%d (%s)\n", host, port,
                st.connected < 0 ? mosquitto_connack_string(st.connack_rc) : mosquitto_strerror(rc));
        return 1;
    }

    char payload[128];
    int64_t first_ns = 0, last_ns = 0;
    long sent = 0;
    int64_t last_misc = bench_mono_ns();
    rc = MOSQ_ERR_SUCCESS;
    while ((sent < n || (qos > 0 && st.acked < n)) && rc == MOSQ_ERR_SUCCESS) {
        /* Publish while the broker takes them: QoS 0 until the socket
         * pushes back, QoS 1 and 2 while the window has room. */
        for (int burst = 0; sent < n && burst < 1024; burst++) {
            if (qos == 0 ? mosquitto_want_write(m) : sent - st.acked >= window) break;
            int t = (int)(sent % topics);
            int len = bench_payload(payload, sizeof payload, first_seq + sent, t);
            if (!first_ns) first_ns = bench_realtime_ns();
            rc = mosquitto_publish(m, NULL, topic[t], len, payload, qos, false);
            if (rc != MOSQ_ERR_SUCCESS) break;
            sent++;
        }
        if (sent == n && !last_ns) last_ns = bench_realtime_ns();
        if (rc != MOSQ_ERR_SUCCESS) break;
        int64_t now = bench_mono_ns();
        if (now > deadline) { rc = MOSQ_ERR_TIMEOUT; break; }
        if (now - last_misc > 1000000000LL) { mosquitto_loop_misc(m); last_misc = now; }
        int busy = qos == 0 ? mosquitto_want_write(m) : sent - st.acked >= window || sent == n;
        rc = net_step(m, busy ? 100 : 0);
    }
    /* QoS 0: whatever libmosquitto still holds must reach the socket. */
    while (rc == MOSQ_ERR_SUCCESS && mosquitto_want_write(m) && bench_mono_ns() < deadline) rc = net_step(m, 100);
    int64_t done_ns = bench_realtime_ns();
    int ok = rc == MOSQ_ERR_SUCCESS && sent == n && (qos == 0 || st.acked >= n);
    if (!ok)
        fprintf(stderr, "bench_pub: stopped after %ld published, %ld acknowledged: %s\n", sent, st.acked,
                rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
    printf("first_publish_ns=%lld last_publish_ns=%lld done_ns=%lld published=%ld acked=%ld\n",
           (long long)first_ns, (long long)(last_ns ? last_ns : done_ns), (long long)done_ns, sent,
           qos == 0 ? sent : st.acked);
    fflush(stdout);
    mosquitto_disconnect(m);
    mosquitto_loop_write(m, 1);
    mosquitto_destroy(m);
    mosquitto_lib_cleanup();
    free(topic);
    return ok ? 0 : 1;
}
