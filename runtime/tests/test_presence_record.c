/* Unit tests for the presence record parser (presence_record.c) and the
 * record MAC (presence_sign.c): what a record gives, what it refuses, and
 * what a signature covers. Prints the cost of signing and verifying. */
#include "test_util.h"
#include "presence_record.h"
#include "presence_sign.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *GOOD =
    "{\"instance\":\"app-h1\",\"host\":\"h1\",\"pid\":42,\"version\":\"0.1.0\",\"group\":\"g\","
    "\"clients\":[\"app-h1-0\",\"app-h1-1\"],\"shared_routes\":[\"$share/g/sensors/+\"],\"routes\":[],"
    "\"workers\":2,\"session_expiry\":300,\"state\":\"lost\",\"sessions\":\"kept\",\"since\":1700000000,"
    "\"seq\":1700000000123001}";

static int parses(const char *s, char *err, size_t n)
{
    presence_record r;
    int rc = presence_record_parse(s, strlen(s), &r, err, n);
    if (!rc) presence_record_free(&r);
    return rc == 0;
}

static void refuses(const char *s, const char *why)
{
    char err[256] = "";
    int ok = parses(s, err, sizeof err);
    CHECK(!ok && strstr(err, why), "%s: want refused with '%s', got %s '%s'", s, why, ok ? "accepted" : "refused", err);
}

static void test_fields(void)
{
    presence_record r;
    char err[256];
    int rc = presence_record_parse(GOOD, strlen(GOOD), &r, err, sizeof err);
    CHECK(rc == 0, "good record: %s", err);
    if (rc) return;
    CHECK(!strcmp(r.instance, "app-h1") && !strcmp(r.host, "h1") && r.pid == 42 && !strcmp(r.state, "lost"),
          "fields");
    CHECK(r.nclients == 2 && !strcmp(r.clients[1], "app-h1-1"), "clients");
    CHECK(r.nshared == 1 && !strcmp(r.shared_routes[0], "$share/g/sensors/+"), "shared routes");
    CHECK(r.nroutes == 0 && r.seq == 1700000000123001LL && r.since == 1700000000, "numbers");
    CHECK(r.signed_len == 0 && r.nmacs == 0, "unsigned");
    presence_record_free(&r);
    presence_record_free(&r);  /* idempotent */

    const char *esc = "{\"instance\":\"a\\\"b\\\\c\\u00e9\\ud83d\\ude00\\/\",\"state\":\"running\",\"x\":{\"y\":[1,2.5e3,null,true]}}";
    rc = presence_record_parse(esc, strlen(esc), &r, err, sizeof err);
    CHECK(rc == 0 && !strcmp(r.instance, "a\"b\\c\xc3\xa9\xf0\x9f\x98\x80/"), "unescaping: %s", rc ? err : r.instance);
    if (!rc) presence_record_free(&r);
}

static void test_refused(void)
{
    refuses("{\"instance\":\"a\",\"instance\":\"b\",\"state\":\"lost\"}", "duplicate member");
    refuses("{\"instance\":\"a\",\"state\":\"lost\",\"x\":1,\"x\":2}", "duplicate member");
    refuses("{\"instance\":\"a\",\"state\":\"gone\"}", "unknown state");
    refuses("{\"state\":\"lost\"}", "no instance");
    refuses("{\"instance\":\"a\"}", "no state");
    refuses("{\"instance\":\"a\",\"state\":\"lost\"} x", "trailing bytes");
    refuses("{\"instance\":\"a\",\"state\":\"lost\",}", "expected a string");
    refuses("{\"instance\":\"a\\u0000b\",\"state\":\"lost\"}", "\\u0000");
    refuses("{\"instance\":\"a\\ud800\",\"state\":\"lost\"}", "surrogate");
    refuses("{\"instance\":\"a\xff\",\"state\":\"lost\"}", "UTF-8");
    refuses("{\"instance\":\"a\nb\",\"state\":\"lost\"}", "control character");
    refuses("{\"instance\":\"a\",\"state\":\"lost\",\"pid\":\"42\"}", "expected a number");
    refuses("{\"instance\":\"a\",\"state\":\"lost\",\"pid\":4.2}", "whole number");
    refuses("{\"instance\":\"a\",\"state\":\"lost\",\"pid\":99999999999999999999}", "");
    refuses("{\"instance\":\"a\",\"state\":\"lost\",\"clients\":\"x\"}", "expected '['");
    refuses("{\"instance\":\"a\",\"state\":\"lost\",\"clients\":[1]}", "expected a string");
    refuses("[\"instance\"]", "expected '{'");
    refuses("{\"instance\":\"a\",\"state\":\"lost\",\"x\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}", "nested");
    refuses("{\"instance\":\"a\",\"state\":\"lost\",\"mac\":\"zz\"}", "mac is not");
    refuses("{\"mac\":\"0123abcd:0000000000000000000000000000000000000000000000000000000000000000\",\"instance\":\"a\"}",
            "mac must follow");
    refuses("{\"instance\":\"a\",\"mac\":\"0123abcd:0000000000000000000000000000000000000000000000000000000000000000\","
            "\"state\":\"lost\"}", "mac must be the last member");
    /* Bounds: a string, a list, the whole record. */
    size_t big = PRESENCE_STR_MAX + 10;
    char *s = malloc(big + 64);
    snprintf(s, big + 64, "{\"instance\":\"%*s\",\"state\":\"lost\"}", (int)big, "x");
    refuses(s, "longer than");
    free(s);
    {
        size_t n = 20 + (PRESENCE_LIST_MAX + 1) * 4 + 40;
        char *l = malloc(n);
        strcpy(l, "{\"instance\":\"a\",\"state\":\"lost\",\"clients\":[");
        for (int i = 0; i <= PRESENCE_LIST_MAX; i++) strcat(l, i ? ",\"c\"" : "\"c\"");
        strcat(l, "]}");
        refuses(l, "more than");
        free(l);
    }
    char *huge = calloc(1, PRESENCE_RECORD_MAX + 2);
    memset(huge, ' ', PRESENCE_RECORD_MAX + 1);
    presence_record r;
    char err[128];
    CHECK(presence_record_parse(huge, PRESENCE_RECORD_MAX + 1, &r, err, sizeof err) == -1 && strstr(err, "longer"),
          "a record above %d bytes", PRESENCE_RECORD_MAX);
    free(huge);
}

/* A record signed as master_presence.c signs it: the MAC covers every byte before ,"mac". */
static char *signed_record(const presence_key *k, const char *body)
{
    size_t n = strlen(body);  /* body ends with '}' */
    char *out = malloc(n + PRESENCE_SIG_LEN + 16);
    memcpy(out, body, n - 1);
    char sig[PRESENCE_SIG_LEN + 1];
    presence_sign(k, body, n - 1, sig);
    sprintf(out + n - 1, ",\"mac\":\"%s\"}", sig);
    return out;
}

static int verifies(const presence_key *keys, int nkeys, const char *buf, const char **why)
{
    presence_record r;
    char err[128];
    if (presence_record_parse(buf, strlen(buf), &r, err, sizeof err)) { *why = "parse"; return 0; }
    int ok = presence_verify(keys, nkeys, buf, &r, why);
    presence_record_free(&r);
    return ok;
}

static void test_sign(void)
{
    presence_key cur, old, other;
    presence_key_init(&cur, "0123456789abcdef-new", 20);
    presence_key_init(&old, "0123456789abcdef-old", 20);
    presence_key_init(&other, "0123456789abcdef-xxx", 20);
    CHECK(strlen(cur.kid) == PRESENCE_KID_LEN && strcmp(cur.kid, old.kid), "key ids differ: %s %s", cur.kid, old.kid);
    presence_key both[2] = { cur, old };
    const char *why = "";
    char *a = signed_record(&cur, GOOD), *b = signed_record(&old, GOOD), *c = signed_record(&other, GOOD);
    CHECK(verifies(both, 2, a, &why), "current key: %s", why);
    CHECK(verifies(both, 2, b, &why), "previous key: %s", why);
    CHECK(!verifies(both, 2, c, &why) && !strcmp(why, "unknown key id"), "unknown key: %s", why);
    CHECK(!verifies(&old, 1, a, &why) && !strcmp(why, "unknown key id"), "(old) host, new key: %s", why);
    CHECK(!verifies(both, 2, GOOD, &why) && !strcmp(why, "unsigned"), "unsigned: %s", why);
    /* Altered after signing: one byte of the covered part. */
    char *alt = strdup(a);
    strstr(alt, "\"pid\":42")[7] = '3';  /* pid 43 */
    CHECK(!verifies(both, 2, alt, &why) && !strcmp(why, "wrong MAC"), "altered: %s", why);
    /* The same MAC with another key id claimed. */
    char *forged = strdup(c);
    memcpy(strstr(forged, "\"mac\":\"") + 7, cur.kid, PRESENCE_KID_LEN);
    CHECK(!verifies(both, 2, forged, &why) && !strcmp(why, "wrong MAC"), "forged kid: %s", why);

    /* Rotation: a host with (new, old) signs with both; (old) and (new) hosts verify it. */
    size_t n = strlen(GOOD);
    char sigs[PRESENCE_SIGS_LEN], *two = malloc(n + sizeof sigs + 16);
    presence_sign_all(both, 2, GOOD, n - 1, sigs);
    memcpy(two, GOOD, n - 1);
    sprintf(two + n - 1, ",\"mac\":\"%s\"}", sigs);
    CHECK(verifies(&old, 1, two, &why), "(old) verifies (new, old): %s", why);
    CHECK(verifies(&cur, 1, two, &why), "(new) verifies (new, old): %s", why);
    CHECK(!verifies(&other, 1, two, &why) && !strcmp(why, "unknown key id"), "unknown key: %s", why);
    free(two);
    refuses("{\"instance\":\"a\",\"state\":\"lost\",\"mac\":\"0123abcd:0000000000000000000000000000000000000000000000000000000000000000,"
            "0123abcd:0000000000000000000000000000000000000000000000000000000000000000,"
            "0123abcd:0000000000000000000000000000000000000000000000000000000000000000\"}", "more than 2 MACs");
    refuses("{\"instance\":\"a\",\"state\":\"lost\",\"mac\":\"0123abcd:0000000000000000000000000000000000000000000000000000000000000000,\"}",
            "mac is not");

    /* The cost, per record of the size above (~400 bytes). */
    int rounds = 20000;
    char sig[PRESENCE_SIG_LEN + 1];
    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < rounds; i++) presence_sign(&cur, a, strlen(a), sig);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int ok = 0;
    for (int i = 0; i < rounds; i++) ok += verifies(both, 2, a, &why);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    double us_sign = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / rounds;
    double us_ver = ((t2.tv_sec - t1.tv_sec) * 1e9 + (t2.tv_nsec - t1.tv_nsec)) / 1e3 / rounds;
    CHECK(ok == rounds, "verify in a loop");
    printf("presence record of %zu bytes: sign %.2f us, parse+verify %.2f us\n", strlen(a), us_sign, us_ver);
    free(a); free(b); free(c); free(alt); free(forged);
}

static void test_roundtrip(void)
{
    char err[256];
    CHECK(presence_record_roundtrip("host-1.example", err, sizeof err), "plain name");
    CHECK(presence_record_roundtrip("h\xc3\xa9te \"quoted\" \\", err, sizeof err), "UTF-8 and escapes: %s", err);
    CHECK(!presence_record_roundtrip("bad\xff", err, sizeof err), "not UTF-8");
    char *big = malloc(PRESENCE_STR_MAX + 2);
    memset(big, 'x', PRESENCE_STR_MAX + 1);
    big[PRESENCE_STR_MAX + 1] = 0;
    CHECK(!presence_record_roundtrip(big, err, sizeof err) && strstr(err, "longer"), "too long: %s", err);
    free(big);
}

int main(void)
{
    test_fields();
    test_refused();
    test_sign();
    test_roundtrip();
    return TEST_SUMMARY("test_presence_record");
}
