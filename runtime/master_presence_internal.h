/* What master_presence.c and master_adopt.c share: the presence connection
 * and the group's records as last seen. Not for use elsewhere. */
#ifndef ROUTEMQ_MASTER_PRESENCE_INTERNAL_H
#define ROUTEMQ_MASTER_PRESENCE_INTERNAL_H

#include <mosquitto.h>
#include <stdint.h>
#include <time.h>
#include "presence_peer.h"
#include "presence_record.h"
#include "presence_sign.h"
#include "strbuf.h"

struct master;

typedef struct peer {
    char *instance;
    char *json;               /* the record as published; NULL once cleared */
    presence_record rec;      /* json, parsed (and verified with a cluster key) */
    char state[PRESENCE_STATE_LEN];  /* "" once cleared (presence_peer_set_state) */
    int64_t state_seen_ns;    /* when we saw it enter that state (monotonic) */
    long long seq;            /* the highest seq accepted: a record below it is a replay */
} peer;

/* A topic whose refused records were logged, and when (log_ignored). */
#define PRESENCE_IGNORED_TOPICS 64
typedef struct presence_ignored {
    uint64_t hash;
    int64_t at;
} presence_ignored;

struct master_presence {
    struct mosquitto *mosq;
    char client_id[600];
    char instance[520];
    char host[256];
    char topic[1200], filter[1200];
    int sock, sock_events;
    int connected;
    int64_t started_ns;         /* master start: the bound of waiting for the records */
    int64_t connect_started_ns, next_connect_ns, subacked_ns;
    double retry_delay;
    int published_p;            /* worker count and application generation last published */
    uint32_t published_gen;
    int will_p;                 /* worker count the will lists client ids for */
    uint32_t will_gen;          /* application generation whose routes the will declares */
    int refreshing;             /* reconnecting on purpose, to give the broker a new will */
    int last_mid, acked_mid;    /* our last record's PUBLISH and the last PUBACK seen */
    int unsubacked;             /* the final UNSUBSCRIBE was acknowledged */
    const char *state;          /* running | stopped | cleared */
    int announced;              /* our record is published (after the start's conflict check) */
    int failed;                 /* a connect attempt failed: no records to wait for at the start */
    int sessions_kept;
    time_t since;
    peer *peers;
    int npeers;
    uint64_t next_misc_ns;
    presence_key keys[2];       /* ROUTEMQ_CLUSTER_KEY, then _PREVIOUS; nkeys 0: records are not signed */
    int nkeys;
    long long epoch_ms;         /* this connection's part of seq: records of later connections sort after */
    int seq_n;                  /* records published on this connection */
    int republish;              /* our topic holds a record not ours: publish ours again */
    presence_ignored ignored[PRESENCE_IGNORED_TOPICS]; /* logged once a minute per topic at most */
};

/* seq of the will of a connection: above every record published on it. */
#define PRESENCE_SEQ_WILL 999

/* A string field of a record (presence_record_parse); "" when absent or not a record. */
void presence_field_str(const char *json, const char *key, char *out, size_t n);
/* A number field of a record, 0 when absent. */
long presence_field_long(const char *json, const char *key);
/* Ends the record being written in b (no closing brace yet): "seq", the MAC
 * with a cluster key, the closing brace. */
void presence_seal(struct master *m, strbuf *b, long long seq);
/* Once a second (master_adopt.c): adopts the orphans not back in time. */
void master_adopt_orphans(struct master *m, int64_t now);

#endif
