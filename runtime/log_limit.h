/* "At most N lines per window, then a count": the one rate limit of log
 * lines that can come in bursts (handler errors, dead letters, failed
 * connection attempts, refused HTTP requests), so a flood cannot fill the
 * log and what was left out is still said. */
#ifndef ROUTEMQ_LOG_LIMIT_H
#define ROUTEMQ_LOG_LIMIT_H

#include <stdint.h>

typedef struct log_limit {
    int64_t window_ns;       /* when the current window began */
    int lines;               /* logged in it */
    int missed;              /* not logged, since the count was last taken */
} log_limit;

/* Starts a new window when the one begun at l->window_ns is window_ns old;
 * returns how many lines were missed until then (the caller logs that
 * count) and forgets them, 0 while the window lasts. */
int log_limit_roll(log_limit *l, int64_t now, int64_t window_ns);
/* Rolls the window (as log_limit_roll, returned in *missed), then: 1 when
 * one more line may be logged in it (at most max), 0 when it is counted as
 * missed instead. */
int log_limit_allow(log_limit *l, int64_t now, int64_t window_ns, int max, int *missed);

#endif
