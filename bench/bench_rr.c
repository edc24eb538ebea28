/* Request/reply latency: an MQTT 5 requester that sends one request at a
 * time to TOPIC (~60-byte JSON, with a response topic of its own and an
 * 8-byte correlation data), waits for the response carrying the same
 * correlation data, and times the round trip (CLOCK_MONOTONIC). Requests and
 * responses use QOS. The first WARMUP round trips are not counted. It stops
 * after N counted round trips or after DURATION_S seconds, whichever comes
 * first; a request without a response within 1 s counts as lost and the
 * next one is sent.
 *
 * TCP_NODELAY is set (the requester is the instrument: its own writes must
 * not wait); -D leaves Nagle on.
 *
 * stdout, one line at the end:
 *   n=N lost=L p50_us=... p90_us=... p99_us=... max_us=... mean_us=...
 * Exit 0 when at least one round trip was timed and none was lost.
 *
 * -R makes it the responder instead, a bare libmosquitto client as a C
 * programmer would write one (Nagle left on, as libmosquitto's default):
 * it subscribes to TOPIC, prints `subscribed_ns=T` once the SUBACK is in,
 * and answers every request on its response topic with its correlation
 * data until it is stopped or DURATION_S + 5 s have passed.
 *
 * Usage: bench_rr -p PORT [-h HOST] [-n N] [-q 0|1] [-T TOPIC] [-W WARMUP]
 *                 [-d DURATION_S] [-D] [-R] */
#include "bench_common.h"
#include "bench_net.h"

#include <errno.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int net_step(struct mosquitto *m, int ms) { return bench_net_step(m, ms, 64); }

typedef struct {
    int connected, subscribed, qos;
    uint64_t want_corr;  /* correlation data of the request in flight */
    int answered;
} rr_state;

static void on_connect(struct mosquitto *m, void *ud, int rc, int flags, const mosquitto_property *props)
{
    rr_state *st = ud;
    st->connected = rc == 0 ? 1 : -1;
    if (rc != 0) fprintf(stderr, "bench_rr: connection refused: %s\n", mosquitto_reason_string(rc));
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *granted,
                         const mosquitto_property *props)
{
    rr_state *st = ud;
    st->subscribed = n >= 1 && granted[0] < 0x80 ? 1 : -1;
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    rr_state *st = ud;
    void *corr = NULL;
    uint16_t len = 0;
    if (!mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &len, false)) return;
    uint64_t got = 0;
    if (len == sizeof got) memcpy(&got, corr, sizeof got);
    free(corr);
    if (len == sizeof got && got == st->want_corr) st->answered = 1;
}

/* Responder: answer on the request's response topic, same correlation data.
 * Inside a callback libmosquitto only queues the packet; the loop writes it. */
static void on_request(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    rr_state *st = ud;
    char *topic = NULL;
    if (!mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &topic, false)) return;
    void *corr = NULL;
    uint16_t len = 0;
    mosquitto_property *out = NULL;
    if (mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &len, false))
        mosquitto_property_add_binary(&out, MQTT_PROP_CORRELATION_DATA, corr, len);
    mosquitto_publish_v5(m, NULL, topic, msg->payloadlen, msg->payload, st->qos, false, out);
    mosquitto_property_free_all(&out);
    free(corr);
    free(topic);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t pct(const int64_t *v, long n, double p)
{
    long k = (long)(p * (double)n + 0.999999) - 1; /* nearest rank */
    if (k < 0) k = 0;
    if (k >= n) k = n - 1;
    return v[k];
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_rr -p PORT [-h HOST] [-n N] [-q 0|1] [-T TOPIC] [-W WARMUP] "
                    "[-d DURATION_S] [-D] [-R]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *topic = "bench/rr/req";
    int port = 0, qos = 0, nodelay = 1, responder = 0, opt;
    long n = 2000, warmup = 50;
    double duration_s = 10;
    while ((opt = getopt(argc, argv, "h:p:n:q:T:W:d:DR")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'n': n = atol(optarg); break;
        case 'q': qos = atoi(optarg); break;
        case 'T': topic = optarg; break;
        case 'W': warmup = atol(optarg); break;
        case 'd': duration_s = atof(optarg); break;
        case 'D': nodelay = 0; break;
        case 'R': responder = 1; nodelay = 0; break;
        default: usage();
        }
    }
    if (port <= 0 || n < 1 || warmup < 0 || (qos != 0 && qos != 1) || duration_s <= 0) usage();

    int64_t *rtt = calloc((size_t)n, sizeof *rtt);
    if (!rtt) return 1;
    char id[64], resp_topic[64];
    snprintf(id, sizeof id, "bench-rr-%d", (int)getpid());
    snprintf(resp_topic, sizeof resp_topic, "bench/rr/resp/%d", (int)getpid());

    rr_state st = { .qos = qos };
    mosquitto_lib_init();
    struct mosquitto *m = mosquitto_new(id, true, &st);
    if (!m) return 1;
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    if (nodelay) mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_v5_callback_set(m, on_connect);
    mosquitto_subscribe_v5_callback_set(m, on_subscribe);
    mosquitto_message_v5_callback_set(m, responder ? on_request : on_message);
    int rc = mosquitto_connect(m, host, port, 60);
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "bench_rr: cannot connect to %s:%d: %s\n", host, port,
                rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        return 1;
    }
    int64_t start = bench_mono_ns();
    int64_t deadline = start + (int64_t)(duration_s * 1e9) + 5000000000LL;
    while (st.connected == 0 && rc == MOSQ_ERR_SUCCESS && bench_mono_ns() < deadline) rc = net_step(m, 100);
    if (st.connected == 1) mosquitto_subscribe_v5(m, NULL, responder ? topic : resp_topic, qos, 0, NULL);
    while (st.connected == 1 && st.subscribed == 0 && rc == MOSQ_ERR_SUCCESS && bench_mono_ns() < deadline)
        rc = net_step(m, 100);
    if (st.subscribed != 1) {
        fprintf(stderr, "bench_rr: not connected and subscribed: %s\n", mosquitto_strerror(rc));
        return 1;
    }

    if (responder) {
        printf("subscribed_ns=%lld\n", (long long)bench_realtime_ns());
        fflush(stdout);
        int64_t last_misc = bench_mono_ns();
        while (rc == MOSQ_ERR_SUCCESS && bench_mono_ns() < deadline) {
            rc = net_step(m, 200);
            int64_t now = bench_mono_ns();
            if (now - last_misc > 1000000000LL) { mosquitto_loop_misc(m); last_misc = now; }
        }
        mosquitto_destroy(m);
        mosquitto_lib_cleanup();
        free(rtt);
        return 0;
    }

    char payload[128];
    long timed = 0, sent = 0, lost = 0;
    int64_t stop_at = bench_mono_ns() + (int64_t)(duration_s * 1e9), last_misc = bench_mono_ns();
    while (timed < n && rc == MOSQ_ERR_SUCCESS && bench_mono_ns() < stop_at) {
        mosquitto_property *props = NULL;
        uint64_t corr = (uint64_t)sent + 1;
        mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, resp_topic);
        mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, &corr, sizeof corr);
        int len = bench_payload(payload, sizeof payload, sent, 0);
        st.want_corr = corr;
        st.answered = 0;
        int64_t t0 = bench_mono_ns();
        rc = mosquitto_publish_v5(m, NULL, topic, len, payload, qos, false, props);
        mosquitto_property_free_all(&props);
        if (rc != MOSQ_ERR_SUCCESS) break;
        sent++;
        int64_t t_end = t0 + 1000000000LL;
        while (!st.answered && rc == MOSQ_ERR_SUCCESS && bench_mono_ns() < t_end) rc = net_step(m, 50);
        int64_t t1 = bench_mono_ns();
        if (!st.answered) {
            if (sent > warmup) lost++;
        } else if (sent > warmup) {
            rtt[timed++] = t1 - t0;
        }
        if (t1 - last_misc > 1000000000LL) { mosquitto_loop_misc(m); last_misc = t1; }
    }
    qsort(rtt, (size_t)timed, sizeof *rtt, cmp_i64);
    double sum = 0;
    for (long i = 0; i < timed; i++) sum += (double)rtt[i];
    if (timed > 0)
        printf("n=%ld lost=%ld p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f mean_us=%.1f\n", timed, lost,
               pct(rtt, timed, 0.50) / 1e3, pct(rtt, timed, 0.90) / 1e3, pct(rtt, timed, 0.99) / 1e3,
               rtt[timed - 1] / 1e3, sum / (double)timed / 1e3);
    else
        printf("n=0 lost=%ld\n", lost);
    fflush(stdout);
    if (rc != MOSQ_ERR_SUCCESS) fprintf(stderr, "bench_rr: %s\n", mosquitto_strerror(rc));
    mosquitto_disconnect(m);
    mosquitto_loop_write(m, 1);
    mosquitto_destroy(m);
    mosquitto_lib_cleanup();
    free(rtt);
    return timed > 0 && lost == 0 ? 0 : 1;
}
