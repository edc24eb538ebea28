/* Unit tests for the adoption decision on followed presence records
 * (presence_peer.c): when a record is an orphan, and when the adoption of
 * an adopter that left is taken over. */
#include "test_util.h"
#include "presence_peer.h"

#include <string.h>

#define S 1000000000LL
#define AFTER (3 * S)  /* ROUTEMQ_ADOPT_AFTER=3 */

typedef struct { char state[PRESENCE_STATE_LEN]; int64_t seen; } followed;

static void see(followed *f, const char *state, int64_t now) { presence_peer_set_state(f->state, &f->seen, state, now); }

static presence_adopt adopt(const followed *orphan, const char *sessions, const followed *adopter, int64_t now)
{
    return presence_peer_adopt(orphan->state, sessions, orphan->seen, adopter ? adopter->state : NULL,
                               adopter ? adopter->seen : 0, now, AFTER);
}

static void test_set_state(void)
{
    followed f = { "", 0 };
    see(&f, "running", 5 * S);
    CHECK(!strcmp(f.state, "running") && f.seen == 5 * S, "first record: %s at %lld", f.state, (long long)f.seen);
    see(&f, "running", 9 * S);
    CHECK(f.seen == 5 * S, "the same state again keeps its time: %lld", (long long)f.seen);
    see(&f, "", 20 * S);
    CHECK(!strcmp(f.state, "") && f.seen == 20 * S, "cleared is a change of state: '%s' at %lld", f.state,
          (long long)f.seen);
}

static void test_orphan(void)
{
    followed o = { "", 0 };
    see(&o, "running", 0);
    CHECK(adopt(&o, "kept", NULL, 100 * S) == PRESENCE_ADOPT_NOT, "running");
    see(&o, "lost", 10 * S);
    CHECK(adopt(&o, "kept", NULL, 10 * S + AFTER - 1) == PRESENCE_ADOPT_NOT, "lost, not yet ADOPT_AFTER");
    CHECK(adopt(&o, "kept", NULL, 10 * S + AFTER) == PRESENCE_ADOPT_ORPHAN, "lost for ADOPT_AFTER");
    CHECK(adopt(&o, NULL, NULL, 10 * S + AFTER) == PRESENCE_ADOPT_ORPHAN, "lost, no sessions field");
    see(&o, "stopped", 20 * S);
    CHECK(adopt(&o, "kept", NULL, 20 * S + AFTER) == PRESENCE_ADOPT_ORPHAN, "stopped, sessions kept");
    CHECK(adopt(&o, "ended", NULL, 20 * S + AFTER) == PRESENCE_ADOPT_NOT, "stopped, sessions ended");
    CHECK(adopt(&o, NULL, NULL, 20 * S + AFTER) == PRESENCE_ADOPT_NOT, "stopped, no sessions field");
}

static void test_adopted(void)
{
    followed o = { "", 0 }, b = { "", 0 };
    see(&b, "running", 1 * S);
    see(&o, "adopted", 50 * S);
    CHECK(adopt(&o, "kept", NULL, 100 * S) == PRESENCE_ADOPT_NOT, "adopted by an instance never seen");
    CHECK(adopt(&o, "kept", &b, 100 * S) == PRESENCE_ADOPT_NOT, "adopted by a running instance");
    followed lost = b;
    see(&lost, "lost", 100 * S);
    CHECK(adopt(&o, "kept", &lost, 100 * S + AFTER - 1) == PRESENCE_ADOPT_NOT, "adopter lost, not yet ADOPT_AFTER");
    CHECK(adopt(&o, "kept", &lost, 100 * S + AFTER) == PRESENCE_ADOPT_LEFT, "adopter lost for ADOPT_AFTER");
}

/* The flake of scaleout_adopt_faults_spec ("left by an instance that stops
 * in its middle"): B, adopting A's sessions, stops and ends its own (its
 * record is cleared), then gives A's record back ("lost"). Seen between the
 * two, the adoption must not be taken over at once, as if B had been gone
 * since it started: the give-back comes first. */
static void test_adopter_cleared(void)
{
    followed a = { "", 0 }, b = { "", 0 };
    see(&b, "running", 1 * S);
    see(&a, "lost", 10 * S);
    see(&a, "adopted", 13 * S);   /* B's claim */
    see(&b, "", 60 * S);          /* B stops: its record is cleared */
    CHECK(adopt(&a, "kept", &b, 60 * S) == PRESENCE_ADOPT_NOT, "B's record just cleared: not taken over at once");
    CHECK(adopt(&a, "kept", &b, 60 * S + AFTER - 1) == PRESENCE_ADOPT_NOT, "B cleared, not yet ADOPT_AFTER");
    see(&a, "lost", 60 * S + S / 100);  /* B's give-back */
    CHECK(adopt(&a, "kept", &b, 60 * S + AFTER) == PRESENCE_ADOPT_NOT, "given back, not yet ADOPT_AFTER");
    CHECK(adopt(&a, "kept", &b, 60 * S + S / 100 + AFTER) == PRESENCE_ADOPT_ORPHAN, "given back, lost for ADOPT_AFTER");
    /* No give-back ever came: taken over ADOPT_AFTER after B's record went. */
    followed a2 = { "", 0 };
    see(&a2, "adopted", 13 * S);
    CHECK(adopt(&a2, "kept", &b, 60 * S + AFTER) == PRESENCE_ADOPT_LEFT, "no give-back: left by B");
}

int main(void)
{
    test_set_state();
    test_orphan();
    test_adopted();
    test_adopter_cleared();
    return TEST_SUMMARY("presence_peer");
}
