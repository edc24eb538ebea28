/* The network loop of the C benchmark clients that drive libmosquitto
 * themselves (header only, like bench_common.h). */
#ifndef ROUTEMQ_BENCH_NET_H
#define ROUTEMQ_BENCH_NET_H

#include <errno.h>
#include <mosquitto.h>
#include <poll.h>

/* One pass: wait up to `ms` for the socket, read up to `max_reads` packets
 * of what arrived, write what is queued. Returns a MOSQ_ERR_* code. */
static inline int bench_net_step(struct mosquitto *m, int ms, int max_reads)
{
    int fd = mosquitto_socket(m);
    if (fd < 0) return MOSQ_ERR_NO_CONN;
    struct pollfd p = { .fd = fd, .events = POLLIN | (mosquitto_want_write(m) ? POLLOUT : 0) };
    int n = poll(&p, 1, ms);
    if (n < 0 && errno != EINTR) return MOSQ_ERR_ERRNO;
    int rc = MOSQ_ERR_SUCCESS;
    if (n > 0 && (p.revents & (POLLIN | POLLERR | POLLHUP))) {
        for (int i = 0; i < max_reads && rc == MOSQ_ERR_SUCCESS; i++) {
            errno = 0;
            rc = mosquitto_loop_read(m, 1);
            if (errno == EAGAIN || errno == EWOULDBLOCK) { rc = MOSQ_ERR_SUCCESS; break; }
        }
        if (rc != MOSQ_ERR_SUCCESS) return rc;
    }
    if (mosquitto_want_write(m)) rc = mosquitto_loop_write(m, 1);
    return rc;
}

#endif
