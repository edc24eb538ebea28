/* What this instance makes of another instance's presence record, as it
 * follows it: the record's state and when that state was first seen, and
 * the adoption decision that rests on them (master_adopt.c). Pure: no I/O,
 * the time is given. */
#ifndef ROUTEMQ_PRESENCE_PEER_H
#define ROUTEMQ_PRESENCE_PEER_H

#include <stddef.h>
#include <stdint.h>

/* A record's state as followed: "running", "stopped", "lost", "adopted", or "" once cleared. */
#define PRESENCE_STATE_LEN 16

/* Sets state (PRESENCE_STATE_LEN bytes) to `to` ("" for a cleared record) and,
 * when that changes it, *seen_ns to now: ROUTEMQ_ADOPT_AFTER counts from there. */
void presence_peer_set_state(char *state, int64_t *seen_ns, const char *to, int64_t now);

typedef enum {
    PRESENCE_ADOPT_NOT = 0,   /* not an orphan, or not yet ROUTEMQ_ADOPT_AFTER */
    PRESENCE_ADOPT_ORPHAN,    /* lost, or stopped with its sessions kept, for ROUTEMQ_ADOPT_AFTER */
    PRESENCE_ADOPT_LEFT,      /* adopted by an instance no longer running for ROUTEMQ_ADOPT_AFTER */
} presence_adopt;

/* Whether a record (state, sessions, its state seen since seen_ns) is to be
 * adopted at now. For an "adopted" record, adopter_state and adopter_seen_ns
 * are those of its adopter's own record (adopter_state NULL: none seen). */
presence_adopt presence_peer_adopt(const char *state, const char *sessions, int64_t seen_ns,
                                   const char *adopter_state, int64_t adopter_seen_ns, int64_t now,
                                   int64_t adopt_after_ns);

#endif
