/* Topic matcher: a trie over MQTT filter levels; the most specific filter wins. */
#ifndef ROUTEMQ_TOPIC_TRIE_H
#define ROUTEMQ_TOPIC_TRIE_H

#include <stddef.h>

typedef struct topic_trie topic_trie;

/* A capture: a span into the matched topic; ptr NULL = absent ('#' that matched the parent level). */
typedef struct {
    const char *ptr;
    size_t len;
} topic_span;

/* Status returned by topic_trie_match besides a route id. */
#define TOPIC_NO_MATCH (-1)
#define TOPIC_NOMEM (-2)

/* A new empty trie; NULL on out of memory. */
topic_trie *topic_trie_new(void);

/* Free the trie and everything it owns; NULL is fine. */
void topic_trie_free(topic_trie *t);

/* Add a valid MQTT filter for route_id (>= 0); 0 ok, -1 with reason in err ("duplicate of route N" if taken). */
int topic_trie_add(topic_trie *t, const char *filter, size_t len, int route_id, char *err, size_t errlen);

/* Route id holding exactly this filter, or -1 if none (or the filter is invalid). */
int topic_trie_find(const topic_trie *t, const char *filter, size_t len);

/* Route id of the most specific filter matching topic, TOPIC_NO_MATCH, or TOPIC_NOMEM.
 * On a match *ncaps = number of wildcard levels of that filter and caps[i] (i < maxcaps)
 * holds the topic text each matched, in filter order. */
int topic_trie_match(const topic_trie *t, const char *topic, size_t len, topic_span *caps, int maxcaps,
                     int *ncaps);

/* Number of routes added. */
size_t topic_trie_count(const topic_trie *t);

#endif
