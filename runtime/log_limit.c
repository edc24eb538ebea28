/* Log lines rate-limited per window (log_limit.h). */
#include "log_limit.h"

int log_limit_roll(log_limit *l, int64_t now, int64_t window_ns)
{
    if (now - l->window_ns < window_ns) return 0;
    int missed = l->missed;
    l->window_ns = now;
    l->lines = l->missed = 0;
    return missed;
}

int log_limit_allow(log_limit *l, int64_t now, int64_t window_ns, int max, int *missed)
{
    *missed = log_limit_roll(l, now, window_ns);
    if (l->lines >= max) {
        l->missed++;
        return 0;
    }
    l->lines++;
    return 1;
}
