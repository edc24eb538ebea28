/* The yardstick: a bare libmosquitto subscriber that only counts messages.
 * Its event loop is what a careful C program would write: poll() on the
 * socket, then mosquitto_loop_read() until the socket is drained.
 *
 * Prints `subscribed_ns=...` once the SUBACK arrives, then, after N messages
 * (or when the connection ends, or after IDLE_S seconds without a message):
 *   count=... first_ns=... last_ns=... cpu_us=... cpu_total_us=...
 * first/last: CLOCK_REALTIME ns of the first and last message handled.
 * cpu_us: this process's user+system CPU from the SUBACK to the last message
 * (getrusage); cpu_total_us: since start. Exit 0 when N were counted.
 *
 * Usage: bench_sub -p PORT -n N [-h HOST] [-q QOS] [-f FILTER] [-V 5|311]
 *                  [-i CLIENT_ID] [-t TIMEOUT_S] [-I IDLE_S] [-N] [-W USEC]
 * -N sets TCP_NODELAY (MOSQ_OPT_TCP_NODELAY), to compare with a client that does.
 * -W spins USEC microseconds per message: a consumer that costs more per
 * message, to see what a consumer's own cost does to the broker's. */
#include "bench_common.h"

#include <errno.h>
#include <mosquitto.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

typedef struct {
    long want, count;
    int subscribed, connected;
    int64_t first_ns, last_ns, last_mono;
    int64_t cpu_sub_us, cpu_last_us;
    const char *filter;
    int qos;
    int64_t spin_ns;
} sub_state;

static int64_t cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

static void on_connect(struct mosquitto *m, void *ud, int rc, int flags, const mosquitto_property *props)
{
    sub_state *st = ud;
    if (rc != 0) {
        fprintf(stderr, "bench_sub: connection refused: %s\n", mosquitto_reason_string(rc));
        st->connected = -1;
        return;
    }
    st->connected = 1;
    mosquitto_subscribe_v5(m, NULL, st->filter, st->qos, 0, NULL);
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *granted,
                         const mosquitto_property *props)
{
    sub_state *st = ud;
    if (n < 1 || granted[0] >= 0x80) {
        fprintf(stderr, "bench_sub: subscription refused\n");
        st->connected = -1;
        return;
    }
    st->subscribed = 1;
    st->cpu_sub_us = cpu_us();
    printf("subscribed_ns=%lld\n", (long long)bench_realtime_ns());
    fflush(stdout);
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    sub_state *st = ud;
    int64_t now = bench_realtime_ns();
    if (!st->count) st->first_ns = now;
    st->last_ns = now;
    if (st->spin_ns)
        while (bench_realtime_ns() - now < st->spin_ns) {
        }
    if (++st->count == st->want) st->cpu_last_us = cpu_us();
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_sub -p PORT -n N [-h HOST] [-q 0|1] [-f FILTER] [-V 5|311] "
                    "[-i CLIENT_ID] [-t TIMEOUT_S] [-I IDLE_S] [-N] [-W USEC]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *client_id = NULL;
    int port = 0, proto = 5, timeout_s = 120, idle_s = 10, nodelay = 0;
    sub_state st = { .want = 200000, .filter = "sensors/+/data", .qos = 0 };
    int opt;
    while ((opt = getopt(argc, argv, "h:p:n:q:f:V:i:t:I:NW:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'n': st.want = atol(optarg); break;
        case 'q': st.qos = atoi(optarg); break;
        case 'f': st.filter = optarg; break;
        case 'V': proto = atoi(optarg); break;
        case 'i': client_id = optarg; break;
        case 't': timeout_s = atoi(optarg); break;
        case 'I': idle_s = atoi(optarg); break;
        case 'N': nodelay = 1; break;
        case 'W': st.spin_ns = (int64_t)atol(optarg) * 1000; break;
        default: usage();
        }
    }
    if (port <= 0 || st.want < 1 || st.qos < 0 || st.qos > 2 || (proto != 5 && proto != 311) || timeout_s < 1 ||
        idle_s < 1)
        usage();

    char idbuf[64];
    if (!client_id) {
        snprintf(idbuf, sizeof idbuf, "bench-sub-%d", (int)getpid());
        client_id = idbuf;
    }
    mosquitto_lib_init();
    struct mosquitto *m = mosquitto_new(client_id, true, &st);
    if (!m) return 1;
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, proto == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    if (nodelay) mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_v5_callback_set(m, on_connect);
    mosquitto_subscribe_v5_callback_set(m, on_subscribe);
    mosquitto_message_v5_callback_set(m, on_message);
    int rc = mosquitto_connect(m, host, port, 60);
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "bench_sub: cannot connect to %s:%d: %s\n", host, port,
                rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        return 1;
    }

    int64_t start = bench_mono_ns(), last_misc = start, last_seen = start;
    long seen = 0;
    while (st.count < st.want && st.connected >= 0) {
        int fd = mosquitto_socket(m);
        if (fd < 0) break;
        struct pollfd p = { .fd = fd, .events = POLLIN | (mosquitto_want_write(m) ? POLLOUT : 0) };
        int n = poll(&p, 1, 200);
        if (n < 0 && errno != EINTR) break;
        rc = MOSQ_ERR_SUCCESS;
        if (n > 0 && (p.revents & (POLLIN | POLLERR | POLLHUP))) {
            for (int i = 0; i < 256 && st.count < st.want; i++) {
                errno = 0;
                rc = mosquitto_loop_read(m, 1);
                if (rc != MOSQ_ERR_SUCCESS || errno == EAGAIN || errno == EWOULDBLOCK) break;
            }
            if (rc != MOSQ_ERR_SUCCESS) break;  /* the server closed: report what came */
        }
        if (mosquitto_want_write(m)) mosquitto_loop_write(m, 1);
        int64_t now = bench_mono_ns();
        if (st.count != seen) { seen = st.count; last_seen = now; }
        if (now - last_misc > 1000000000LL) { mosquitto_loop_misc(m); last_misc = now; }
        if (now - start > (int64_t)timeout_s * 1000000000LL) break;
        if (st.subscribed && now - last_seen > (int64_t)idle_s * 1000000000LL) break;
    }
    if (st.count < st.want) st.cpu_last_us = cpu_us();
    printf("count=%ld first_ns=%lld last_ns=%lld cpu_us=%lld cpu_total_us=%lld\n", st.count,
           (long long)st.first_ns, (long long)st.last_ns, (long long)(st.cpu_last_us - st.cpu_sub_us),
           (long long)st.cpu_last_us);
    fflush(stdout);
    if (mosquitto_socket(m) >= 0) {
        mosquitto_disconnect(m);
        mosquitto_loop_write(m, 1);
    }
    mosquitto_destroy(m);
    mosquitto_lib_cleanup();
    return st.count == st.want ? 0 : 1;
}
