/* Replay server: measures a subscriber without a broker in the way. It
 * listens on 127.0.0.1, accepts up to CONNS MQTT connections (3.1.1 or 5),
 * answers CONNECT with CONNACK and each SUBSCRIBE with a SUBACK granting the
 * requested QoS; the first connection that subscribes gets the stream (a
 * routemq worker also opens a publishing connection: it gets CONNACK,
 * PINGRESP and a PUBACK for each QoS 1 publish), N pre-encoded PUBLISH packets (round-robin
 * over `sensors/<i>/data`) as fast as the client reads them, in big
 * writes. At QoS 1 the packets carry ids and the client's PUBACKs are read
 * and counted; PINGREQ is answered. When all N are written (and, at QoS 1,
 * acknowledged) it half-closes, waits for the client to close, and exits.
 *
 * stdout, one line per event:
 *   listening port=P
 *   subscribed_ns=T            (the SUBACK is written)
 *   stream_start_ns=T stream_end_ns=T sent=N acked=K
 * With -g the stream starts only on SIGUSR1 (the driver samples the
 * subscriber's CPU time first). Everything is bounded by -t seconds.
 *
 * Usage: bench_replay [-p PORT] [-n N] [-q 0|1] [-T TOPICS] [-g] [-t TIMEOUT_S] */
#include "bench_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH (256 * 1024)  /* bytes per write() while streaming */

typedef struct {
    unsigned char *p;
    size_t len, cap;
} bytes;

static int bytes_put(bytes *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q) return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

static int put_varint(bytes *b, size_t v)
{
    unsigned char enc[4];
    int k = 0;
    do {
        enc[k] = (unsigned char)(v % 128);
        v /= 128;
        if (v) enc[k] |= 0x80;
        k++;
    } while (v && k < 4);
    return bytes_put(b, enc, (size_t)k);
}

/* All N PUBLISH packets back to back. */
static int encode_stream(bytes *out, long n, int qos, int v5, int topics)
{
    char topic[32], payload[128];
    for (long i = 0; i < n; i++) {
        int t = (int)(i % topics);
        int tlen = snprintf(topic, sizeof topic, "sensors/%d/data", t);
        int plen = bench_payload(payload, sizeof payload, i, t);
        size_t rem = 2 + (size_t)tlen + (qos ? 2 : 0) + (v5 ? 1 : 0) + (size_t)plen;
        unsigned char head = (unsigned char)(0x30 | (qos << 1));
        unsigned char tl[2] = { (unsigned char)(tlen >> 8), (unsigned char)tlen };
        unsigned mid = (unsigned)(i % 65535) + 1;
        unsigned char id[2] = { (unsigned char)(mid >> 8), (unsigned char)mid };
        unsigned char noprops = 0;
        if (bytes_put(out, &head, 1) || put_varint(out, rem) || bytes_put(out, tl, 2) ||
            bytes_put(out, topic, (size_t)tlen) || (qos && bytes_put(out, id, 2)) ||
            (v5 && bytes_put(out, &noprops, 1)) || bytes_put(out, payload, (size_t)plen))
            return -1;
    }
    return 0;
}

#define CONNS 4  /* the subscriber's connections: its stream and its publishing one */

typedef struct {
    int fd, v5;
    bytes in;
} conn;

typedef struct {
    int fd, sigfd, v5, wait_go, qos, topics;  /* fd: the stream's connection, -1 until a SUBSCRIBE */
    long n, acked;
    int subscribed, streaming, client_gone;
    bytes out, stream;
    conn c[CONNS];
    int nc;
    size_t stream_pos;
    int64_t start_ns, end_ns;
} server;

static int send_all(int fd, const unsigned char *p, size_t n, int64_t deadline)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w > 0) { p += w; n -= (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && bench_mono_ns() < deadline) {
            struct pollfd q = { .fd = fd, .events = POLLOUT };
            poll(&q, 1, 100);
            continue;
        }
        return -1;
    }
    return 0;
}

/* Reads a big-endian 16-bit length-prefixed field; returns its total size or -1. */
static long skip_str(const unsigned char *p, size_t avail)
{
    if (avail < 2) return -1;
    size_t n = ((size_t)p[0] << 8) | p[1];
    return 2 + n <= avail ? (long)(2 + n) : -1;
}

static int get_varint(const unsigned char *p, size_t avail, size_t *value, size_t *used)
{
    size_t v = 0, mult = 1;
    for (size_t i = 0; i < 4 && i < avail; i++) {
        v += (p[i] & 127) * mult;
        mult *= 128;
        if (!(p[i] & 128)) { *value = v; *used = i + 1; return 0; }
    }
    return avail >= 4 ? -2 : -1;  /* -2 malformed, -1 need more */
}

static int start_stream(server *s)
{
    if (encode_stream(&s->stream, s->n, s->qos, s->v5, s->topics)) {
        fprintf(stderr, "bench_replay: out of memory encoding %ld messages\n", s->n);
        return -1;
    }
    s->streaming = 1;
    s->start_ns = bench_realtime_ns();
    return 0;
}

/* One complete packet from the client. */
static int handle_packet(server *s, conn *c, unsigned char type, const unsigned char *b, size_t len,
                         int64_t deadline)
{
    unsigned char reply[600];
    size_t r = 0;
    switch (type >> 4) {
    case 1: {  /* CONNECT */
        long k = skip_str(b, len);
        if (k < 0 || (size_t)k >= len) return -1;
        c->v5 = b[k] == 5;
        reply[r++] = 0x20;
        reply[r++] = c->v5 ? 3 : 2;
        reply[r++] = 0;  /* no session present */
        reply[r++] = 0;  /* accepted */
        if (c->v5) reply[r++] = 0;  /* no properties */
        return send_all(c->fd, reply, r, deadline);
    }
    case 3: {  /* PUBLISH (a handler's, on the publishing connection): QoS 1 acknowledged */
        if (((type >> 1) & 3) != 1) return 0;
        long k = skip_str(b, len);
        if (k < 0 || (size_t)k + 2 > len) return -1;
        reply[r++] = 0x40;
        reply[r++] = 2;
        reply[r++] = b[k];
        reply[r++] = b[k + 1];
        return send_all(c->fd, reply, r, deadline);
    }
    case 8: {  /* SUBSCRIBE */
        if (len < 2) return -1;
        if (s->fd < 0) {
            s->fd = c->fd;
            s->v5 = c->v5;
        }
        size_t pos = 2;
        if (c->v5) {
            size_t plen, used;
            if (get_varint(b + pos, len - pos, &plen, &used)) return -1;
            pos += used + plen;
        }
        unsigned char codes[256];
        size_t nc = 0;
        while (pos < len && nc < sizeof codes) {
            long k = skip_str(b + pos, len - pos);
            if (k < 0 || pos + (size_t)k >= len) return -1;
            pos += (size_t)k;
            codes[nc++] = b[pos++] & 3;
        }
        size_t rem = 2 + (c->v5 ? 1 : 0) + nc;
        reply[r++] = 0x90;
        reply[r++] = (unsigned char)rem;  /* < 128 with at most 125 filters */
        reply[r++] = b[0];
        reply[r++] = b[1];
        if (c->v5) reply[r++] = 0;
        memcpy(reply + r, codes, nc);
        r += nc;
        if (send_all(c->fd, reply, r, deadline)) return -1;
        if (!s->subscribed) {
            s->subscribed = 1;
            printf("subscribed_ns=%lld\n", (long long)bench_realtime_ns());
            fflush(stdout);
            if (!s->wait_go) return start_stream(s);
        }
        return 0;
    }
    case 4: if (c->fd == s->fd) s->acked++; return 0;  /* PUBACK */
    case 10: {  /* UNSUBSCRIBE: success for each filter */
        if (len < 2) return -1;
        size_t pos = 2, nf = 0;
        if (c->v5) {
            size_t plen, used;
            if (get_varint(b + pos, len - pos, &plen, &used)) return -1;
            pos += used + plen;
            while (pos < len) {
                long k = skip_str(b + pos, len - pos);
                if (k < 0) return -1;
                pos += (size_t)k;
                nf++;
            }
        }
        if (nf > 100) return -1;
        reply[r++] = 0xB0;
        reply[r++] = (unsigned char)(2 + (c->v5 ? 1 + nf : 0));
        reply[r++] = b[0];
        reply[r++] = b[1];
        if (c->v5) {
            reply[r++] = 0;  /* no properties */
            memset(reply + r, 0, nf);  /* reason code 0 (success) per filter */
            r += nf;
        }
        return send_all(c->fd, reply, r, deadline);
    }
    case 12: reply[r++] = 0xD0; reply[r++] = 0; return send_all(c->fd, reply, r, deadline);  /* PINGREQ */
    case 14: return 1;  /* DISCONNECT */
    default: return 0;
    }
}

/* Reads what connection c sent and handles every complete packet:
 * 0, 1 when it left (closed or DISCONNECT), -1 on a malformed packet. */
static int read_client(server *s, conn *c, int64_t deadline)
{
    unsigned char buf[65536];
    int gone = 0;
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n == 0) { gone = 1; break; }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            gone = 1;
            break;
        }
        if (bytes_put(&c->in, buf, (size_t)n)) return -1;
        if ((size_t)n < sizeof buf) break;
    }
    size_t pos = 0;
    while (c->in.len - pos >= 2) {
        size_t rem, used;
        int rc = get_varint(c->in.p + pos + 1, c->in.len - pos - 1, &rem, &used);
        if (rc == -2) return -1;
        if (rc == -1 || c->in.len - pos < 1 + used + rem) break;
        rc = handle_packet(s, c, c->in.p[pos], c->in.p + pos + 1 + used, rem, deadline);
        if (rc < 0) return -1;
        if (rc > 0) gone = 1;
        pos += 1 + used + rem;
    }
    memmove(c->in.p, c->in.p + pos, c->in.len - pos);
    c->in.len -= pos;
    return gone;
}

/* Closes connection i (not the stream's: its end is the run's). */
static void drop_conn(server *s, int i)
{
    close(s->c[i].fd);
    free(s->c[i].in.p);
    s->c[i] = s->c[--s->nc];
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_replay [-p PORT] [-n N] [-q 0|1] [-T TOPICS] [-g] [-t TIMEOUT_S]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    server s = { .fd = -1, .sigfd = -1, .n = 200000, .topics = 100 };
    int port = 0, timeout_s = 120, opt;
    while ((opt = getopt(argc, argv, "p:n:q:T:gt:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'n': s.n = atol(optarg); break;
        case 'q': s.qos = atoi(optarg); break;
        case 'T': s.topics = atoi(optarg); break;
        case 'g': s.wait_go = 1; break;
        case 't': timeout_s = atoi(optarg); break;
        default: usage();
        }
    }
    if (port < 0 || s.n < 1 || (s.qos != 0 && s.qos != 1) || s.topics < 1 || timeout_s < 1) usage();
    int64_t deadline = bench_mono_ns() + (int64_t)timeout_s * 1000000000LL;
    signal(SIGPIPE, SIG_IGN);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    s.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, CONNS) ||
        getsockname(lfd, (struct sockaddr *)&a, &alen)) {
        fprintf(stderr, "bench_replay: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
        return 1;
    }
    printf("listening port=%d\n", ntohs(a.sin_port));
    fflush(stdout);

    int ok = 0;
    while (bench_mono_ns() < deadline && !s.client_gone) {
        int writing = s.streaming && s.stream_pos < s.stream.len;
        struct pollfd p[2 + CONNS] = { { .fd = s.sigfd, .events = POLLIN },
                                       { .fd = s.nc < CONNS ? lfd : -1, .events = POLLIN } };
        for (int i = 0; i < s.nc; i++)
            p[2 + i] = (struct pollfd){ .fd = s.c[i].fd,
                                        .events = POLLIN | (writing && s.c[i].fd == s.fd ? POLLOUT : 0) };
        int nc = s.nc;
        int n = poll(p, 2 + (nfds_t)nc, 200);
        if (n < 0 && errno != EINTR) break;
        if (n <= 0) continue;
        if (p[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(s.sigfd, &si, sizeof si) == sizeof si) {}
            if (s.subscribed && !s.streaming && start_stream(&s)) break;
        }
        int bad = 0;
        for (int i = nc - 1; i >= 0; i--) {  /* from the end: drop_conn moves the last into i */
            conn *c = &s.c[i];
            int is_stream = c->fd == s.fd;
            if (p[2 + i].revents & (POLLIN | POLLERR | POLLHUP)) {
                int rc = read_client(&s, c, deadline);
                if (rc < 0) {
                    fprintf(stderr, "bench_replay: malformed packet from the client\n");
                    bad = 1;
                    break;
                }
                if (rc > 0 && is_stream) s.client_gone = 1;
                if (rc > 0 && !is_stream) { drop_conn(&s, i); continue; }
            }
            if (is_stream && writing && (p[2 + i].revents & POLLOUT)) {
                size_t left = s.stream.len - s.stream_pos;
                ssize_t w = write(s.fd, s.stream.p + s.stream_pos, left < BATCH ? left : BATCH);
                if (w > 0) s.stream_pos += (size_t)w;
                else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) bad = 1;
            }
        }
        if (bad) break;
        if (p[1].revents & POLLIN) {
            int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) s.c[s.nc++] = (conn){ .fd = fd };
        }
        if (s.streaming && s.stream_pos == s.stream.len && (s.qos == 0 || s.acked >= s.n)) {
            s.end_ns = bench_realtime_ns();
            ok = 1;
            break;
        }
    }
    close(lfd);
    if (s.fd < 0) {
        fprintf(stderr, "bench_replay: no client subscribed\n");
        for (int i = 0; i < s.nc; i++) close(s.c[i].fd);
        return 1;
    }
    if (ok) {
        /* Half-close, then wait for the client to finish reading and close:
         * closing with unread input would reset the connection and drop the
         * tail of the stream. */
        shutdown(s.fd, SHUT_WR);
        int64_t until = deadline;  /* a slow reader (valgrind) needs its time: closing early would reset */
        while (!s.client_gone && bench_mono_ns() < until) {
            struct pollfd p = { .fd = s.fd, .events = POLLIN };
            if (poll(&p, 1, 100) > 0) {
                unsigned char buf[4096];
                ssize_t r = read(s.fd, buf, sizeof buf);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) s.client_gone = 1;
            }
        }
    } else {
        fprintf(stderr, "bench_replay: stopped after %zu of %zu bytes, %ld acknowledged%s\n", s.stream_pos,
                s.stream.len, s.acked, s.client_gone ? " (the client left)" : "");
    }
    printf("stream_start_ns=%lld stream_end_ns=%lld sent=%ld acked=%ld\n", (long long)s.start_ns,
           (long long)s.end_ns, ok ? s.n : 0, s.acked);
    fflush(stdout);
    for (int i = 0; i < s.nc; i++) {
        close(s.c[i].fd);
        free(s.c[i].in.p);
    }
    free(s.stream.p);
    return ok ? 0 : 1;
}
