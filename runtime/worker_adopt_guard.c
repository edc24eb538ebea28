/* An adoption worker resumes another client's session on the word of a
 * presence record. If a message comes that none of the routes the record
 * declares matches, the session is not what the record said (a forged or
 * stale record, or another application's client): leave it as it is. The
 * worker exits at once, before libmosquitto writes the acknowledgement it
 * queued (threaded mode), so the broker keeps the message for its owner;
 * exiting, not DISCONNECT with expiry 0, keeps the session. */
#include "worker_internal.h"
#include "log.h"

#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* MQTT filter matching ('+' one level, '#' the rest); $share/<group>/ dropped. */
static int filter_matches(const char *filter, const char *topic)
{
    if (!strncmp(filter, "$share/", 7)) {
        const char *slash = strchr(filter + 7, '/');
        if (!slash) return 0;
        filter = slash + 1;
    }
    if (topic[0] == '$' && (filter[0] == '+' || filter[0] == '#')) return 0;  /* MQTT 4.7.2 */
    for (;;) {
        if (filter[0] == '#' && !filter[1]) return 1;
        size_t fl = strcspn(filter, "/"), tl = strcspn(topic, "/");
        if (!(fl == 1 && filter[0] == '+') && (fl != tl || memcmp(filter, topic, fl))) return 0;
        filter += fl;
        topic += tl;
        if (!*filter && !*topic) return 1;
        if (!*topic) return !strcmp(filter, "/#");  /* "a/#" matches "a" */
        if (!*filter) return 0;
        filter++;
        topic++;
    }
}

void worker_adopt_guard(worker *w, const char *topic)
{
    const worker_args *a = w->args;
    if (!a->adopt_client_id || !a->adopt_routes) return;
    for (int i = 0; i < a->adopt_nroutes; i++)
        if (filter_matches(a->adopt_routes[i], topic)) return;
    char t[LOG_TOPIC_BUF];
    log_warn("leaving the session of %s untouched: it holds a message on %s, which none of the %d routes its "
             "presence record declares matches (a suspicious record)", w->conn.client_id,
             log_topic(t, sizeof t, topic, strlen(topic)), a->adopt_nroutes);
    int fd = w->conn.mosq ? mosquitto_socket(w->conn.mosq) : -1;
    if (fd >= 0) shutdown(fd, SHUT_RDWR);  /* nothing queued leaves any more */
    _exit(WORKER_EXIT_ADOPT_REFUSED);
}
