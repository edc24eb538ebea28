/* Fuzz target: the route pattern compiler and the topic/filter validators.
 * A compiled pattern's filter must itself be a valid filter, with one name
 * slot per wildcard level. */
#include "topic_pattern.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    char err[256];
    topic_pattern p;
    memset(&p, 0, sizeof p);
    if (topic_pattern_compile(s, size, &p, err, sizeof err) == 0) {
        if (topic_validate_filter(p.filter, p.filter_len, err, sizeof err) != 0) abort();
        if (strlen(p.filter) != p.filter_len) abort();
        int wild = 0;
        for (size_t i = 0; i < p.filter_len; i++) wild += p.filter[i] == '+' || p.filter[i] == '#';
        if (wild != p.nwild) abort();
        topic_pattern_free(&p);
        topic_pattern_free(&p);  /* documented as safe on an already freed pattern */
    } else if (p.filter != NULL || p.nwild != 0) {
        abort();  /* a failed compile leaves nothing to free */
    }
    if (topic_validate_publish(s, size, err, sizeof err) == 0) {
        if (memchr(s, '+', size) || memchr(s, '#', size) || memchr(s, 0, size)) abort();
        if (!topic_utf8_valid(s, size)) abort();
    }
    (void)topic_validate_filter(s, size, err, sizeof err);
    return 0;
}
