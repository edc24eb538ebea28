/* Fuzz target: the .env parser. Every entry it returns is KEY=VALUE with a
 * key of letters, digits and '_', and no line gives more than one entry. */
#include "config.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    FILE *f = fmemopen((void *)data, size, "r");
    if (!f) return 0;
    char **list = NULL;
    char err[512];
    err[0] = 0;
    int rc = config_parse_dotenv(f, "fuzz.env", &list, err, sizeof err);
    fclose(f);
    if (rc != 0) {
        if (list != NULL || strncmp(err, "fuzz.env:", 9) != 0) abort();
        return 0;
    }
    /* One entry per line at most: a long line must not turn into two. */
    size_t lines = 1, entries = 0;
    for (size_t i = 0; i + 1 < size; i++) lines += data[i] == '\n';
    for (char **e = list; e && *e; e++) entries++;
    if (entries > lines) abort();
    for (char **e = list; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || eq == *e) abort();
        for (const char *k = *e; k < eq; k++)
            if (!isalnum((unsigned char)*k) && *k != '_') abort();
        free(*e);
    }
    free(list);
    return 0;
}
