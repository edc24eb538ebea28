/* Unit tests for the shared log rate limit (log_limit.c) and reconnect
 * backoff (backoff.h): at most N lines a window, the rest counted and
 * handed back once, when the window ends; the backoff doubles to its ceiling. */
#include "test_util.h"
#include "../log_limit.h"
#include "../backoff.h"

#define W 10000000000LL

int main(void)
{
    log_limit l = { 0 };
    int missed = -1, allowed = 0;
    int64_t t = W;  /* a monotonic clock well past the zero window */
    for (int i = 0; i < 25; i++) {
        int m;
        allowed += log_limit_allow(&l, t + i, W, 10, &m);
        if (i) CHECK(m == 0, "nothing missed is reported inside the window (line %d: %d)", i, m);
    }
    CHECK(allowed == 10, "10 lines of 25 allowed in one window: %d", allowed);
    CHECK(l.missed == 15, "15 counted as missed: %d", l.missed);
    CHECK(log_limit_roll(&l, t + W - 1, W) == 0 && l.missed == 15, "the window is not over yet");
    CHECK(log_limit_roll(&l, t + W, W) == 15, "its end hands the count back");
    CHECK(log_limit_roll(&l, t + 2 * W, W) == 0, "once");
    CHECK(log_limit_allow(&l, t + 3 * W, W, 10, &missed) == 1 && missed == 0, "a new window logs again");

    double d = 0;
    CHECK(backoff_next(&d, 0.5, 3) == 0.5 && d == 1.0, "first wait: the minimum (%g next)", d);
    CHECK(backoff_next(&d, 0.5, 3) == 1.0 && d == 2.0, "then doubled");
    CHECK(backoff_next(&d, 0.5, 3) == 2.0 && d == 3.0, "up to the ceiling (%g)", d);
    CHECK(backoff_next(&d, 0.5, 3) == 3.0 && d == 3.0, "and no further");
    return TEST_SUMMARY("test_log_limit");
}
