/* Unit tests for the small shared helpers: FNV-1a (hash.h) against the
 * published test vectors, and /proc statm parsing (proc_statm.c). */
#include "test_util.h"
#include "hash.h"
#include "proc_statm.h"

#include <string.h>
#include <unistd.h>

int main(void)
{
    struct { const char *s; uint64_t want; } v[] = {
        { "", 0xcbf29ce484222325ULL },
        { "a", 0xaf63dc4c8601ec8cULL },
        { "foobar", 0x85944171f73967e8ULL },
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        uint64_t h = hash_fnv1a(HASH_FNV1A_INIT, v[i].s, strlen(v[i].s));
        CHECK(h == v[i].want, "fnv1a(\"%s\") = %016llx", v[i].s, (unsigned long long)h);
    }
    /* Folding in pieces equals folding at once. */
    uint64_t a = hash_fnv1a(hash_fnv1a(HASH_FNV1A_INIT, "foo", 3), "bar", 3);
    CHECK(a == 0x85944171f73967e8ULL, "in pieces");
    CHECK(hash_fnv1a_word(HASH_FNV1A_INIT, 'a') == 0xaf63dc4c8601ec8cULL, "a word is one step");

    uint64_t self = 0, mine = 0;
    CHECK(proc_rss_kb(0, &self) == 0 && self > 0, "own RSS: %llu kB", (unsigned long long)self);
    CHECK(proc_rss_kb(getpid(), &mine) == 0 && mine > 0, "RSS by pid: %llu kB", (unsigned long long)mine);
    CHECK(proc_rss_kb(0x7ffffff0, &mine) == -1, "no such process");
    return TEST_SUMMARY("test_hash");
}
