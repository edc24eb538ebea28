/* Nanosecond arithmetic: every duration in the runtime is an int64_t of
 * nanoseconds from CLOCK_MONOTONIC (shm_now_ns). */
#ifndef ROUTEMQ_CLOCK_H
#define ROUTEMQ_CLOCK_H

#define NS_PER_US 1000LL
#define NS_PER_MS 1000000LL
#define NS_PER_S  1000000000LL

/* Seconds (a configuration value) as nanoseconds. */
#define NS_FROM_S(s) ((int64_t)((s) * 1e9))

#endif
