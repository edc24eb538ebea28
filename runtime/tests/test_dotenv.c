/* Unit tests for the .env parser (config.c): what a line gives, and the
 * lines it refuses with "<file>:<line>: reason". */
#include "test_util.h"
#include "config.h"

#include <stdlib.h>
#include <string.h>

/* Parses text; returns the entries joined by '|' (or "ERR <reason>"), malloc'd. */
static char *parse(const char *text, size_t len)
{
    FILE *f = fmemopen((void *)text, len, "r");
    char **list = NULL, err[256];
    int rc = config_parse_dotenv(f, "t.env", &list, err, sizeof err);
    fclose(f);
    char *out = calloc(1, len + 300);
    if (rc) { snprintf(out, len + 300, "ERR %s", err); return out; }
    for (char **e = list; e && *e; e++) {
        if (e != list) strcat(out, "|");
        strcat(out, *e);
        free(*e);
    }
    free(list);
    return out;
}

static void expect(const char *text, const char *want)
{
    char *got = parse(text, strlen(text));
    CHECK(!strcmp(got, want), "parse(%s): got '%s', want '%s'", text, got, want);
    free(got);
}

int main(void)
{
    expect("A=1\nB = two \n", "A=1|B=two");
    expect("# comment\n\n  export C=3\n", "C=3");
    expect("D=\"x\\ny \\\" z\"\n", "D=x\ny \" z");
    expect("E='single # kept'\n", "E=single # kept");
    expect("F=plain # comment\n", "F=plain");
    expect("G=1\r\nH=2", "G=1|H=2");
    expect("BAD LINE\n", "ERR t.env:1: expected KEY=VALUE");
    expect("A=1\nK-Y=2\n", "ERR t.env:2: expected KEY=VALUE");
    expect("A=\"open\n", "ERR t.env:1: unterminated quote");

    /* A NUL byte used to cut the line short, and the rest of an 8 KiB line
     * used to be read as a line of its own. */
    char nul[] = "A=x\0B=2\n";
    char *got = parse(nul, sizeof nul - 1);
    CHECK(!strcmp(got, "ERR t.env:1: NUL byte in line"), "NUL: %s", got);
    free(got);
    size_t n = 9000;
    char *longl = malloc(n + 8);
    memcpy(longl, "A=", 2);
    memset(longl + 2, 'x', n - 2);
    memcpy(longl + n - 4, "B=1\n", 5);
    got = parse(longl, strlen(longl));
    CHECK(!strncmp(got, "A=xxx", 5) && !strchr(got, '|'), "an 9000-byte line is one entry");
    free(got);
    free(longl);
    n = 70000;
    longl = malloc(n + 1);
    memset(longl, 'x', n);
    memcpy(longl, "A=", 2);
    longl[n] = 0;
    got = parse(longl, n);
    CHECK(!strcmp(got, "ERR t.env:1: line too long (at most 65536 bytes)"), "too long: %.60s", got);
    free(got);
    free(longl);
    return TEST_SUMMARY("test_dotenv");
}
