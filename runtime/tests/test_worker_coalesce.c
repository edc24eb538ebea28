/* Unit tests for worker_coalesce.c: SO_RCVLOWAT is raised only for a stream that fills
 * the mark within the wait, a raised mark stays while reads bring enough, a read of the
 * timer that finds less lowers it and holds it down for the hold-off, and the deadline is
 * there only while raised. Then the kernel behaviour the design rests on, on a real TCP
 * connection over 127.0.0.1: below the mark epoll stays silent, at the mark it wakes. */
#include "test_util.h"
#include "../worker_coalesce.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MS 1000000LL

static void decisions(void)
{
    worker_coalesce c;
    worker_coalesce_reset(&c);
    int64_t t = 10 * COALESCE_HOLDOFF_NS;
    CHECK(worker_coalesce_deadline(&c) == INT64_MAX, "no deadline before anything is raised");

    /* A slow stream: 100 bytes a millisecond never fills the mark. */
    for (int i = 0; i < 50; i++) {
        t += MS + 1;
        CHECK(worker_coalesce_after_read(&c, 100, t, 0) == COALESCE_KEEP, "slow stream %d: kept at 1", i);
    }
    CHECK(!c.raised && worker_coalesce_deadline(&c) == INT64_MAX, "slow stream: not raised");

    /* A fast one, after a pause: the mark's worth within the wait, in small reads. */
    t += 2 * COALESCE_WAIT_NS;
    enum coalesce_action a = COALESCE_KEEP;
    int reads = 0;
    while (a == COALESCE_KEEP && reads < 100) {
        t += COALESCE_WAIT_NS / 40;
        a = worker_coalesce_after_read(&c, 120, t, 0);
        reads++;
    }
    CHECK(a == COALESCE_RAISE, "fast stream: raised (action %d)", a);
    CHECK(reads == (COALESCE_BYTES + 119) / 120, "raised at the read that filled the mark (%d reads)", reads);
    CHECK(worker_coalesce_deadline(&c) == t + COALESCE_WAIT_NS, "deadline one wait after the raise");

    /* Raised: the socket wakes us with the mark's worth; the deadline moves. */
    t += MS / 2;
    CHECK(worker_coalesce_after_read(&c, COALESCE_BYTES + 300, t, 0) == COALESCE_KEEP, "full read: stays raised");
    CHECK(worker_coalesce_deadline(&c) == t + COALESCE_WAIT_NS, "deadline moved with the read");
    t += MS / 4;
    CHECK(worker_coalesce_after_read(&c, 0, t, 0) == COALESCE_KEEP && worker_coalesce_deadline(&c) == t - MS / 4 + COALESCE_WAIT_NS,
          "a read of buffered bytes only (0 from the socket) does not move the deadline");
    t += COALESCE_WAIT_NS;
    CHECK(worker_coalesce_after_read(&c, COALESCE_BYTES, t, 1) == COALESCE_KEEP, "the timer found the mark's worth: raised");

    /* The stream slows: the timer finds less, and the mark drops. */
    t += COALESCE_WAIT_NS;
    CHECK(worker_coalesce_after_read(&c, 300, t, 1) == COALESCE_LOWER, "the timer found less: lowered");
    CHECK(!c.raised && worker_coalesce_deadline(&c) == INT64_MAX, "lowered: no deadline");

    /* Held down for the hold-off, however fast the stream is again. */
    int64_t lowered = t;
    int raised_early = 0;
    while (t < lowered + COALESCE_HOLDOFF_NS - COALESCE_WAIT_NS) {
        t += COALESCE_WAIT_NS / 4;
        if (worker_coalesce_after_read(&c, COALESCE_BYTES, t, 0) != COALESCE_KEEP) raised_early = 1;
    }
    CHECK(!raised_early, "not raised again within the hold-off");
    t = lowered + COALESCE_HOLDOFF_NS;
    CHECK(worker_coalesce_after_read(&c, COALESCE_BYTES, t, 0) == COALESCE_RAISE, "raised again after it");

    /* The timer finding nothing at all (the burst ended) lowers it as well. */
    t += COALESCE_WAIT_NS;
    CHECK(worker_coalesce_after_read(&c, 0, t, 1) == COALESCE_LOWER, "the timer found nothing: lowered");

    worker_coalesce_reset(&c);
    CHECK(!c.raised && c.holdoff_until_ns == 0 && worker_coalesce_deadline(&c) == INT64_MAX,
          "a new connection starts lowered, without hold-off");

    /* A socket that refused the option is never raised again. */
    CHECK(worker_coalesce_after_read(&c, COALESCE_BYTES, t, 0) == COALESCE_RAISE, "raised");
    worker_coalesce_refused(&c);
    CHECK(!c.raised && worker_coalesce_deadline(&c) == INT64_MAX, "refused: lowered");
    int raised_after_refusal = 0;
    for (int i = 0; i < 1000; i++) {
        t += COALESCE_HOLDOFF_NS;
        if (worker_coalesce_after_read(&c, 4 * COALESCE_BYTES, t, 0) != COALESCE_KEEP) raised_after_refusal = 1;
    }
    CHECK(!raised_after_refusal, "refused: never raised again, however fast the stream");
}

/* A connected TCP pair over 127.0.0.1: r reads, s sends. */
static int tcp_pair(int *r, int *s)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&a, &alen))
        return -1;
    *s = socket(AF_INET, SOCK_STREAM, 0);
    if (*s < 0 || connect(*s, (struct sockaddr *)&a, sizeof a)) return -1;
    *r = accept(l, NULL, NULL);
    close(l);
    return *r < 0 ? -1 : 0;
}

static int ready(int ep, int ms)
{
    struct epoll_event ev;
    return epoll_wait(ep, &ev, 1, ms);
}

static void kernel(void)
{
    int r, s;
    if (tcp_pair(&r, &s)) {
        CHECK(0, "no TCP connection over 127.0.0.1");
        return;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = r };
    epoll_ctl(ep, EPOLL_CTL_ADD, r, &ev);
    int mark = COALESCE_BYTES;
    CHECK(setsockopt(r, SOL_SOCKET, SO_RCVLOWAT, &mark, sizeof mark) == 0, "SO_RCVLOWAT set");
    char buf[COALESCE_BYTES];
    memset(buf, 'x', sizeof buf);
    CHECK(write(s, buf, 100) == 100, "100 bytes sent");
    CHECK(ready(ep, 50) == 0, "below the mark epoll stays silent");
    CHECK(write(s, buf, COALESCE_BYTES - 100) == COALESCE_BYTES - 100, "the rest of the mark sent");
    CHECK(ready(ep, 1000) == 1, "at the mark epoll wakes");
    CHECK(read(r, buf, sizeof buf) == COALESCE_BYTES, "and the read takes it all");
    mark = 1;
    CHECK(setsockopt(r, SOL_SOCKET, SO_RCVLOWAT, &mark, sizeof mark) == 0, "lowered to 1");
    CHECK(write(s, buf, 1) == 1 && ready(ep, 1000) == 1, "one byte wakes it again");
    close(ep);
    close(r);
    close(s);
}

int main(void)
{
    decisions();
    kernel();
    return TEST_SUMMARY("test_worker_coalesce");
}
