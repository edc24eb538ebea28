/* The state of a followed presence record and the adoption decision (presence_peer.h). */
#include "presence_peer.h"

#include <stdio.h>
#include <string.h>

void presence_peer_set_state(char *state, int64_t *seen_ns, const char *to, int64_t now)
{
    if (!strcmp(state, to)) return;
    snprintf(state, PRESENCE_STATE_LEN, "%s", to);
    *seen_ns = now;
}

presence_adopt presence_peer_adopt(const char *state, const char *sessions, int64_t seen_ns,
                                   const char *adopter_state, int64_t adopter_seen_ns, int64_t now,
                                   int64_t adopt_after_ns)
{
    if (!strcmp(state, "adopted")) {
        /* A graceful stop gives the record back (give_back in master_adopt.c)
         * before the adopter's own record goes: this is for an adopter that
         * was lost in the middle, or whose give-back never came. Counted from
         * when its record stopped saying running, a cleared one included. */
        if (!adopter_state || !strcmp(adopter_state, "running")) return PRESENCE_ADOPT_NOT;
        return now - adopter_seen_ns >= adopt_after_ns ? PRESENCE_ADOPT_LEFT : PRESENCE_ADOPT_NOT;
    }
    int orphan = !strcmp(state, "lost") || (!strcmp(state, "stopped") && sessions && !strcmp(sessions, "kept"));
    return orphan && now - seen_ns >= adopt_after_ns ? PRESENCE_ADOPT_ORPHAN : PRESENCE_ADOPT_NOT;
}
