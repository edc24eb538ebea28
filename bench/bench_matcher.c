/* Matcher throughput with 10, 1,000 and 100,000 routes: the cost per match must not grow
 * with the route count. Usage: bench_matcher [seconds per size, default 1.0] */
#include "topic_pattern.h"
#include "topic_trie.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NTOPICS 64
#define BATCH 16 /* passes over the topic array between clock reads */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Route i of a realistic mix; a few patterns use several params. */
static void route_pattern(int i, char *buf, size_t size)
{
    switch (i % 5) {
    case 0: snprintf(buf, size, "sensors/%d/data", i); break;
    case 1: snprintf(buf, size, "devices/{id}/%d/status", i); break;
    case 2: snprintf(buf, size, "logs/%d/{rest...}", i); break;
    case 3: snprintf(buf, size, "tenants/{tenant}/%d/{kind}/events", i); break;
    default: snprintf(buf, size, "cmd/%d/+/reply", i); break;
    }
}

static int build(topic_trie *t, int nroutes)
{
    char buf[128], err[256];
    for (int i = 0; i < nroutes; i++) {
        topic_pattern p;
        route_pattern(i, buf, sizeof buf);
        if (topic_pattern_compile(buf, strlen(buf), &p, err, sizeof err) != 0 ||
            topic_trie_add(t, p.filter, p.filter_len, i, err, sizeof err) != 0) {
            fprintf(stderr, "bench_matcher: route '%s': %s\n", buf, err);
            topic_pattern_free(&p);
            return -1;
        }
        topic_pattern_free(&p);
    }
    /* Catch-alls so misses still walk a few levels before failing. */
    static const char *extra[] = { "alerts/+/+/critical", "$SYS/#" };
    for (int i = 0; i < 2; i++) {
        if (topic_trie_add(t, extra[i], strlen(extra[i]), nroutes + i, err, sizeof err) != 0)
            return -1;
    }
    return 0;
}

/* Topics of depth 3-5 spread over the whole id range: 5/8 hits, 3/8 misses. */
static void make_topics(int nroutes, char topics[NTOPICS][96])
{
    for (int k = 0; k < NTOPICS; k++) {
        int i = (int)(((long long)k * 7919) % nroutes);
        int base = i - i % 5;
        char *s = topics[k];
        size_t n = sizeof topics[k];
        switch (k % 8) {
        case 0: snprintf(s, n, "sensors/%d/data", base); break;
        case 1: snprintf(s, n, "devices/dev-%d/%d/status", k, base + 1 < nroutes ? base + 1 : 1); break;
        case 2: snprintf(s, n, "logs/%d/app/worker", base + 2 < nroutes ? base + 2 : 2); break;
        case 3: snprintf(s, n, "tenants/acme/%d/temp/events", base + 3 < nroutes ? base + 3 : 3); break;
        case 4: snprintf(s, n, "alerts/site%d/room/critical", k); break;
        case 5: snprintf(s, n, "sensors/%d/data", base + 1); break;          /* miss: wrong kind */
        case 6: snprintf(s, n, "unknown/%d/x/y", i); break;                 /* miss at level 1 */
        default: snprintf(s, n, "devices/dev/%d/status/extra", base + 1); break; /* miss: too deep */
        }
    }
}

typedef struct {
    int routes;
    double per_sec, ns;
    int hits;
} result;

static int run(int nroutes, double seconds, result *res)
{
    static char topics[NTOPICS][96];
    size_t lens[NTOPICS];
    topic_trie *t = topic_trie_new();
    if (t == NULL || build(t, nroutes) != 0) {
        topic_trie_free(t);
        return -1;
    }
    make_topics(nroutes, topics);
    for (int k = 0; k < NTOPICS; k++)
        lens[k] = strlen(topics[k]);

    topic_span caps[TOPIC_MAX_WILDCARDS];
    int ncaps, hits = 0;
    for (int k = 0; k < NTOPICS; k++)
        hits += topic_trie_match(t, topics[k], lens[k], caps, TOPIC_MAX_WILDCARDS, &ncaps) >= 0;

    /* The checksum keeps the compiler from discarding the matches. */
    long long count = 0, checksum = 0;
    double start = now(), elapsed;
    do {
        for (int b = 0; b < BATCH; b++) {
            for (int k = 0; k < NTOPICS; k++)
                checksum += topic_trie_match(t, topics[k], lens[k], caps, TOPIC_MAX_WILDCARDS, &ncaps);
        }
        count += BATCH * NTOPICS;
        elapsed = now() - start;
    } while (elapsed < seconds);
    topic_trie_free(t);

    res->routes = nroutes;
    res->per_sec = (double)count / elapsed;
    res->ns = elapsed * 1e9 / (double)count;
    res->hits = hits;
    printf("matcher routes=%d matches_per_sec=%.0f ns_per_match=%.1f hits=%d/%d checksum=%lld\n", nroutes,
           res->per_sec, res->ns, hits, NTOPICS, checksum);
    return 0;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    if (!(seconds > 0)) {
        fprintf(stderr, "usage: bench_matcher [seconds per size]\n");
        return 2;
    }
    static const int sizes[] = { 10, 1000, 100000 };
    enum { NSIZES = sizeof sizes / sizeof sizes[0] };
    result res[NSIZES];
    for (int i = 0; i < NSIZES; i++) {
        if (run(sizes[i], seconds, &res[i]) != 0)
            return 1;
    }
    for (int i = 0; i < NSIZES; i++)
        printf("{\"bench\":\"matcher\",\"routes\":%d,\"matches_per_sec\":%.0f,\"ns_per_match\":%.1f}\n",
               res[i].routes, res[i].per_sec, res[i].ns);
    double ratio = res[NSIZES - 1].ns / res[0].ns;
    printf("matcher ratio_ns_100000_vs_10=%.2f %s\n", ratio, ratio <= 2.0 ? "ok" : "TOO_SLOW");
    return ratio <= 2.0 ? 0 : 1;
}
