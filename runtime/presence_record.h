/* A presence record (docs/deployment.md) as read from the broker: one pure, strict
 * parser (presence_record.c) for everything the master decides on. */
#ifndef ROUTEMQ_PRESENCE_RECORD_H
#define ROUTEMQ_PRESENCE_RECORD_H

#include <stddef.h>

#define PRESENCE_RECORD_MAX (1 << 20) /* bytes of one record */
#define PRESENCE_STR_MAX 1024      /* bytes of one string, unescaped */
#define PRESENCE_LIST_MAX 4096     /* entries of clients, shared_routes or routes */
#define PRESENCE_MEMBERS_MAX 64    /* members of the record object */
#define PRESENCE_KID_LEN 8         /* hex digits of a key id */
#define PRESENCE_MAC_LEN 64        /* hex digits of an HMAC-SHA256 */
#define PRESENCE_MACS_MAX 2        /* MACs of one record: the current and the previous key */

typedef struct presence_record {
    /* Strings are NULL when absent; instance and state are always there. */
    char *instance, *host, *version, *group, *state, *sessions, *adopted_by;
    long long pid, workers, session_expiry, since, seq;  /* 0 when absent */
    char **clients;         /* client ids of the instance's sessions */
    int nclients;
    char **shared_routes;   /* shared subscriptions ($share/...) */
    int nshared;
    char **routes;          /* its other (non-shared) subscriptions */
    int nroutes;
    /* The MACs: "mac":"<kid>:<hex>[,<kid>:<hex>]" (one per key of the
     * publisher: while a key is rotated, hosts that know either can verify),
     * the last member. signed_len is the number of leading bytes they cover
     * (up to the comma before "mac"); 0: unsigned. */
    char kid[PRESENCE_MACS_MAX][PRESENCE_KID_LEN + 1];
    char mac[PRESENCE_MACS_MAX][PRESENCE_MAC_LEN + 1];
    int nmacs;
    size_t signed_len;
} presence_record;

/* Parses buf[0..len) (RFC 8259 JSON, UTF-8; strings unescaped; duplicate
 * members, unknown state values, wrong types and sizes above the bounds
 * refused). Pure: no I/O, no globals. 0 and *r filled (free it with
 * presence_record_free), or -1 with the reason in err and *r empty. */
int presence_record_parse(const char *buf, size_t len, presence_record *r, char *err, size_t errlen);
/* Releases what the parser allocated; *r is empty again. Idempotent. */
void presence_record_free(presence_record *r);
/* 1 when s survives being written into a record with strbuf's JSON writer
 * and read back by presence_record_parse unchanged; 0 else (why in err). */
int presence_record_roundtrip(const char *s, char *err, size_t errlen);

#endif
