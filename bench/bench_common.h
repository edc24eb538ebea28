/* Small helpers shared by the C benchmark tools (header only, so every
 * bench_*.c stays one self-contained executable). */
#ifndef ROUTEMQ_BENCH_COMMON_H
#define ROUTEMQ_BENCH_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <time.h>

/* Wall-clock time in ns: comparable between processes (publisher, broker
 * side subscribers, the driver). */
static inline int64_t bench_realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Monotonic time in ns, for deadlines. */
static inline int64_t bench_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The benchmark payload: about 60 bytes of JSON whose "seq" field carries
 * the message's sequence number. Returns its length. */
static inline int bench_payload(char *buf, size_t size, long seq, int topic)
{
    int n = snprintf(buf, size, "{\"seq\":%ld,\"id\":%d,\"temp\":21.53,\"hum\":48.1,\"bat\":3.71}", seq, topic);
    return n < 0 ? 0 : (n >= (int)size ? (int)size - 1 : n);
}

#endif
