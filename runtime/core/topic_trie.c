/* Topic matcher.
 *
 * Nodes live in one array; literal children of every node share ONE open-addressing hash
 * table keyed by (parent node, level bytes), so a lookup costs one probe sequence whatever
 * the number of routes, and adding a route never allocates a per-node table. Each node also
 * has at most one '+' child and one '#' route. Matching is an iterative DFS preferring
 * literal, then '+', then '#' at each level, so the first complete match is the most
 * specific one, decided left to right. */
#include "topic_trie.h"
#include "topic_pattern.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE (-1)
#define INLINE_KEY 16     /* most levels fit, so a probe usually touches one cache line */
#define STACK_FRAMES 32   /* match frames kept on the C stack; deeper tries fall back to malloc */
#define MAX_NODES 0x7FFFFFFF

typedef struct {
    int32_t plus;    /* node reached through '+', or NONE */
    int32_t route;   /* route whose filter ends exactly here, or NONE */
    int32_t multi;   /* route whose filter is this node's path plus '#', or NONE */
    uint32_t nlit;   /* literal children: lets the match skip hashing at leaves */
} trie_node;

typedef struct {
    uint32_t parent;
    uint32_t child;  /* 0 = empty slot: the root is never anyone's child */
    uint32_t hash;
    uint32_t len;
    union {
        char inl[INLINE_KEY];
        uint32_t off; /* into the arena when len > INLINE_KEY */
    } key;
} trie_edge;

struct topic_trie {
    trie_node *nodes;
    uint32_t nnodes, capnodes;
    trie_edge *edges;
    uint32_t nedges, mask;  /* table size is mask + 1, a power of two, at most half full */
    char *arena;
    size_t arenalen, arenacap;
    uint32_t maxdepth;      /* most non-'#' levels in any filter: bounds the match stack */
    size_t nroutes;
};

typedef struct {
    uint32_t node;
    uint32_t start;    /* this level's offset in the topic; > topic length once all consumed */
    uint32_t end;      /* offset just past this level */
    uint8_t next;      /* next alternative to try: 0 literal, 1 '+', 2 '#', 3 exhausted */
    uint8_t via_plus;  /* the current path consumed this level with '+' */
} match_frame;

static void set_err(char *err, size_t errlen, const char *msg, int id)
{
    if (err == NULL || errlen == 0)
        return;
    if (id >= 0)
        snprintf(err, errlen, "%s%d", msg, id);
    else
        snprintf(err, errlen, "%s", msg);
}

static size_t level_end(const char *s, size_t start, size_t len)
{
    const char *slash = memchr(s + start, '/', len - start);
    return slash ? (size_t)(slash - s) : len;
}

static uint64_t mix(uint64_t h, uint64_t w)
{
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 29);
}

static uint32_t level_hash(uint32_t parent, const char *s, size_t n)
{
    uint64_t h = ((uint64_t)parent * 0x9E3779B97F4A7C15ull) ^ (uint64_t)n;
    for (; n >= 8; s += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = mix(h, w);
    }
    if (n > 0) {
        uint64_t w = 0;
        memcpy(&w, s, n);
        h = mix(h, w);
    }
    h = mix(h, h >> 32);
    return (uint32_t)(h ^ (h >> 32));
}

static const char *edge_key(const topic_trie *t, const trie_edge *e)
{
    return e->len <= INLINE_KEY ? e->key.inl : t->arena + e->key.off;
}

/* Child of parent for this literal level, or 0 if none. */
static uint32_t edge_find(const topic_trie *t, uint32_t parent, const char *s, size_t n, uint32_t h)
{
    for (uint32_t i = h & t->mask;; i = (i + 1) & t->mask) {
        const trie_edge *e = &t->edges[i];
        if (e->child == 0)
            return 0;
        if (e->hash == h && e->parent == parent && e->len == n && memcmp(edge_key(t, e), s, n) == 0)
            return e->child;
    }
}

static void edge_place(trie_edge *table, uint32_t mask, const trie_edge *e)
{
    uint32_t i = e->hash & mask;
    while (table[i].child != 0)
        i = (i + 1) & mask;
    table[i] = *e;
}

static int edges_grow(topic_trie *t)
{
    uint32_t size = (t->mask + 1) * 2;
    if (size == 0)
        return -1;
    trie_edge *table = calloc(size, sizeof *table);
    if (table == NULL)
        return -1;
    for (uint32_t i = 0; i <= t->mask; i++) {
        if (t->edges[i].child != 0)
            edge_place(table, size - 1, &t->edges[i]);
    }
    free(t->edges);
    t->edges = table;
    t->mask = size - 1;
    return 0;
}

static int edge_insert(topic_trie *t, uint32_t parent, const char *s, size_t n, uint32_t h, uint32_t child)
{
    /* Keep the load at most 1/2 so probe sequences stay short and misses end fast. */
    if ((uint64_t)(t->nedges + 1) * 2 > (uint64_t)t->mask + 1 && edges_grow(t) != 0)
        return -1;
    trie_edge e = { .parent = parent, .child = child, .hash = h, .len = (uint32_t)n };
    if (n <= INLINE_KEY) {
        memcpy(e.key.inl, s, n);
    } else {
        if (t->arenalen + n > UINT32_MAX)
            return -1;
        if (t->arenalen + n > t->arenacap) {
            size_t cap = t->arenacap ? t->arenacap * 2 : 1024;
            while (cap < t->arenalen + n)
                cap *= 2;
            char *a = realloc(t->arena, cap);
            if (a == NULL)
                return -1;
            t->arena = a;
            t->arenacap = cap;
        }
        memcpy(t->arena + t->arenalen, s, n);
        e.key.off = (uint32_t)t->arenalen;
        t->arenalen += n;
    }
    edge_place(t->edges, t->mask, &e);
    t->nedges++;
    return 0;
}

/* Index of a fresh node, or -1 on out of memory. */
static int32_t node_new(topic_trie *t)
{
    if (t->nnodes == t->capnodes) {
        if (t->capnodes >= MAX_NODES / 2)
            return -1;
        uint32_t cap = t->capnodes * 2;
        trie_node *nodes = realloc(t->nodes, cap * sizeof *nodes);
        if (nodes == NULL)
            return -1;
        t->nodes = nodes;
        t->capnodes = cap;
    }
    trie_node *nd = &t->nodes[t->nnodes];
    nd->plus = nd->route = nd->multi = NONE;
    nd->nlit = 0;
    return (int32_t)t->nnodes++;
}

topic_trie *topic_trie_new(void)
{
    topic_trie *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->capnodes = 16;
    t->nodes = malloc(t->capnodes * sizeof *t->nodes);
    t->mask = 15;
    t->edges = calloc(t->mask + 1, sizeof *t->edges);
    if (t->nodes == NULL || t->edges == NULL || node_new(t) != 0) {
        topic_trie_free(t);
        return NULL;
    }
    return t;
}

void topic_trie_free(topic_trie *t)
{
    if (t == NULL)
        return;
    free(t->nodes);
    free(t->edges);
    free(t->arena);
    free(t);
}

size_t topic_trie_count(const topic_trie *t)
{
    return t->nroutes;
}

/* Child of node for one non-'#' level, creating it when create is set; -1 if absent or OOM. */
static int32_t child_for(topic_trie *t, uint32_t node, const char *lvl, size_t n, int create)
{
    if (n == 1 && lvl[0] == '+') {
        int32_t child = t->nodes[node].plus;
        if (child == NONE && create) {
            child = node_new(t);
            if (child >= 0)
                t->nodes[node].plus = child;
        }
        return child;
    }
    uint32_t h = level_hash(node, lvl, n);
    uint32_t child = edge_find(t, node, lvl, n, h);
    if (child != 0)
        return (int32_t)child;
    if (!create)
        return -1;
    int32_t fresh = node_new(t);
    if (fresh < 0 || edge_insert(t, node, lvl, n, h, (uint32_t)fresh) != 0)
        return -1;
    t->nodes[node].nlit++;
    return fresh;
}

/* Walk filter's levels; returns a pointer to the route slot it ends in, or NULL if absent/OOM.
 * Nodes made before an out-of-memory failure stay behind routeless, which only costs space. */
static int32_t *filter_slot(topic_trie *t, const char *filter, size_t len, int create, uint32_t *depth)
{
    uint32_t node = 0;
    *depth = 0;
    for (size_t start = 0;;) {
        size_t end = level_end(filter, start, len);
        const char *lvl = filter + start;
        size_t n = end - start;
        if (n == 1 && lvl[0] == '#')
            return &t->nodes[node].multi;
        int32_t child = child_for(t, node, lvl, n, create);
        if (child < 0)
            return NULL;
        node = (uint32_t)child;
        (*depth)++;
        if (end == len)
            return &t->nodes[node].route;
        start = end + 1;
    }
}

int topic_trie_add(topic_trie *t, const char *filter, size_t len, int route_id, char *err, size_t errlen)
{
    if (route_id < 0) {
        set_err(err, errlen, "route id must be >= 0", -1);
        return -1;
    }
    if (topic_validate_filter(filter, len, err, errlen) != 0)
        return -1;
    uint32_t depth;
    int32_t *slot = filter_slot(t, filter, len, 1, &depth);
    if (slot == NULL) {
        set_err(err, errlen, "out of memory", -1);
        return -1;
    }
    if (*slot != NONE) {
        set_err(err, errlen, "duplicate of route ", *slot);
        return -1;
    }
    *slot = route_id;
    if (depth > t->maxdepth)
        t->maxdepth = depth;
    t->nroutes++;
    return 0;
}

int topic_trie_find(const topic_trie *t, const char *filter, size_t len)
{
    if (topic_validate_filter(filter, len, NULL, 0) != 0)
        return -1;
    uint32_t depth;
    /* create = 0 never writes, so dropping const here is safe. */
    int32_t *slot = filter_slot((topic_trie *)t, filter, len, 0, &depth);
    return slot ? *slot : -1;
}

static void frame_enter(match_frame *f, uint32_t node, uint32_t start, const char *topic, uint32_t len)
{
    f->node = node;
    f->start = start;
    f->end = start <= len ? (uint32_t)level_end(topic, start, len) : start;
    f->next = 0;
    f->via_plus = 0;
}

/* Captures of the path fr[0..d] ending in route; multi: 0 none, 1 '#' took the rest, 2 '#' absent. */
static int collect(const match_frame *fr, size_t d, int multi, const char *topic, uint32_t len,
                   topic_span *caps, int maxcaps)
{
    int n = 0;
    for (size_t i = 0; i < d; i++) {
        if (!fr[i].via_plus)
            continue;
        if (n < maxcaps)
            caps[n] = (topic_span){ topic + fr[i].start, fr[i].end - fr[i].start };
        n++;
    }
    if (multi != 0) {
        if (n < maxcaps)
            caps[n] = multi == 1 ? (topic_span){ topic + fr[d].start, len - fr[d].start }
                                 : (topic_span){ NULL, 0 };
        n++;
    }
    return n;
}

/* Core DFS over frames fr (room for every reachable depth). */
static int match_dfs(const topic_trie *t, const char *topic, uint32_t len, match_frame *fr,
                     topic_span *caps, int maxcaps, int *ncaps)
{
    /* MQTT: '$' topics are for the broker's own use and never match a leading wildcard. */
    int dollar = topic[0] == '$';
    size_t d = 0;
    frame_enter(&fr[0], 0, 0, topic, len);
    for (;;) {
        match_frame *f = &fr[d];
        const trie_node *nd = &t->nodes[f->node];
        int wild_ok = d > 0 || !dollar;
        if (f->start > len) {
            /* Topic fully consumed: an exact end beats a '#' that matches the parent level. */
            if (f->next == 0) {
                f->next = 1;
                if (nd->route != NONE) {
                    *ncaps = collect(fr, d, 0, topic, len, caps, maxcaps);
                    return nd->route;
                }
            }
            if (f->next == 1) {
                f->next = 2;
                if (nd->multi != NONE) {
                    *ncaps = collect(fr, d, 2, topic, len, caps, maxcaps);
                    return nd->multi;
                }
            }
        } else {
            switch (f->next) {
            case 0:
                f->next = 1;
                if (nd->nlit > 0) {
                    const char *lvl = topic + f->start;
                    size_t n = f->end - f->start;
                    uint32_t child = edge_find(t, f->node, lvl, n, level_hash(f->node, lvl, n));
                    if (child != 0) {
                        f->via_plus = 0;
                        frame_enter(&fr[++d], child, f->end + 1, topic, len);
                        continue;
                    }
                }
                /* fall through */
            case 1:
                f->next = 2;
                if (wild_ok && nd->plus != NONE) {
                    f->via_plus = 1;
                    frame_enter(&fr[++d], (uint32_t)nd->plus, f->end + 1, topic, len);
                    continue;
                }
                /* fall through */
            case 2:
                f->next = 3;
                if (wild_ok && nd->multi != NONE) {
                    *ncaps = collect(fr, d, 1, topic, len, caps, maxcaps);
                    return nd->multi;
                }
                break;
            default:
                break;
            }
        }
        if (d == 0)
            return TOPIC_NO_MATCH;
        d--;
    }
}

int topic_trie_match(const topic_trie *t, const char *topic, size_t len, topic_span *caps, int maxcaps,
                     int *ncaps)
{
    int dummy;
    if (ncaps == NULL)
        ncaps = &dummy;
    *ncaps = 0;
    if (len == 0 || len > TOPIC_MAX_LEN || memchr(topic, '\0', len) != NULL || !topic_utf8_valid(topic, len))
        return TOPIC_NO_MATCH;
    /* The DFS only descends where both the topic and some filter have another level. */
    size_t levels = 1;
    for (const char *p = topic, *end = topic + len; (p = memchr(p, '/', (size_t)(end - p))) != NULL; p++)
        levels++;
    size_t need = (levels < t->maxdepth ? levels : t->maxdepth) + 1;
    match_frame local[STACK_FRAMES];
    match_frame *fr = local;
    if (need > STACK_FRAMES) {
        fr = malloc(need * sizeof *fr);
        if (fr == NULL)
            return TOPIC_NOMEM;
    }
    int rc = match_dfs(t, topic, (uint32_t)len, fr, caps, maxcaps < 0 ? 0 : maxcaps, ncaps);
    if (fr != local)
        free(fr);
    return rc;
}
