/* Unit tests for the dead-letter store (dlq_store.c): records come back
 * byte for byte, filters and paging select the right ones, the bound drops
 * the oldest, and the replay states move as the contract says. */
#include "test_util.h"
#include "../dlq_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A copy of what a walk saw (the entry's pointers die with the callback). */
typedef struct seen {
    int n;
    int64_t ids[64];
    char topic[64][64];
    char payload[256];
    size_t payload_len;
    char props[64];
    size_t props_len;
    int qos, retain, attempts, replays, state;
    char reason[16], error[64], traceback[64], route[64], owner[32];
} seen;

static int collect(const dlq_entry *e, void *arg)
{
    seen *s = arg;
    if (s->n < 64) {
        s->ids[s->n] = e->id;
        snprintf(s->topic[s->n], sizeof s->topic[0], "%.*s", (int)e->topic_len, e->topic);
    }
    s->n++;
    if (e->payload_len <= sizeof s->payload) memcpy(s->payload, e->payload, e->payload_len);
    s->payload_len = e->payload_len;
    if (e->props_len <= sizeof s->props && e->props) memcpy(s->props, e->props, e->props_len);
    s->props_len = e->props_len;
    s->qos = e->qos;
    s->retain = e->retain;
    s->attempts = e->attempts;
    s->replays = e->replays;
    s->state = e->state;
    snprintf(s->reason, sizeof s->reason, "%s", e->reason);
    snprintf(s->error, sizeof s->error, "%s", e->error ? e->error : "(null)");
    snprintf(s->traceback, sizeof s->traceback, "%s", e->traceback ? e->traceback : "(null)");
    snprintf(s->route, sizeof s->route, "%s", e->route);
    snprintf(s->owner, sizeof s->owner, "%s", e->owner ? e->owner : "(null)");
    return 0;
}

static int refuse_second(const dlq_entry *e, void *arg)
{
    seen *s = arg;
    if (s->n == 1) return 1;
    return collect(e, arg);
}

static int64_t put(dlq_store *st, const char *topic, const char *route, int64_t time_ms, long max, long *dropped)
{
    dlq_entry e = { .time_ms = time_ms, .topic = topic, .topic_len = strlen(topic), .route = route,
                    .payload = "x", .payload_len = 1, .qos = 1, .attempts = 3, .reason = "error",
                    .error = "boom", .traceback = "stack traceback:" };
    int64_t id = 0;
    if (dlq_store_put(st, &e, max, &id, dropped)) {
        printf("put failed: %s\n", dlq_store_error(st));
        return -1;
    }
    return id;
}

static int count_route(const char *route, long count, void *arg)
{
    long *c = arg;
    if (!strcmp(route, "a/+")) c[0] = count;
    if (!strcmp(route, "b/#")) c[1] = count;
    return 0;
}

int main(void)
{
    char dir[] = "/tmp/test_dlq_store.XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/dead-letters.db", dir);
    dlq_store *st = NULL;

    CHECK(dlq_store_open(path, 0, &st, err, sizeof err) == -1 && errno == ENOENT && !st,
          "without create a missing store is ENOENT");
    CHECK(strstr(err, path) != NULL, "the error names the path: %s", err);
    CHECK(dlq_store_open(path, 1, &st, err, sizeof err) == 0 && st, "created: %s", err);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600, "file mode 0600: %o", sb.st_mode & 0777);

    /* Binary payload with NUL bytes and every byte value, packed properties. */
    unsigned char payload[256];
    for (int i = 0; i < 256; i++) payload[i] = (unsigned char)(255 - i);
    const char props[] = { 0x26, 0, 1, 'k', 0, 1, 'v', 0x03, 0, 0 };
    dlq_entry e = { .time_ms = 1000, .topic = "bin/é/1", .topic_len = strlen("bin/é/1"), .route = "bin/+/+",
                    .payload = payload, .payload_len = sizeof payload, .qos = 2, .retain = 1, .props = props,
                    .props_len = sizeof props, .attempts = 4, .reason = "crash", .error = "killed by SIGKILL",
                    .traceback = NULL };
    int64_t bin_id = 0;
    long dropped = 0;
    CHECK(dlq_store_put(st, &e, 100, &bin_id, &dropped) == 0 && bin_id > 0 && dropped == 0, "put binary");
    seen s = { 0 };
    CHECK(dlq_store_get(st, bin_id, collect, &s) == 1 && s.n == 1, "get finds it");
    CHECK(s.payload_len == sizeof payload && !memcmp(s.payload, payload, sizeof payload), "payload byte for byte");
    CHECK(s.props_len == sizeof props && !memcmp(s.props, props, sizeof props), "properties byte for byte");
    CHECK(!strcmp(s.topic[0], "bin/é/1") && !strcmp(s.route, "bin/+/+"), "topic and route: %s %s", s.topic[0],
          s.route);
    CHECK(s.qos == 2 && s.retain == 1 && s.attempts == 4 && s.replays == 0 && s.state == DLQ_STORED,
          "qos %d retain %d attempts %d state %d", s.qos, s.retain, s.attempts, s.state);
    CHECK(!strcmp(s.reason, "crash") && !strcmp(s.error, "killed by SIGKILL") && !strcmp(s.traceback, "(null)"),
          "reason, error, no traceback: %s %s %s", s.reason, s.error, s.traceback);
    memset(&s, 0, sizeof s);
    CHECK(dlq_store_get(st, 9999, collect, &s) == 0 && s.n == 0, "get of a missing id is 0");

    /* An empty payload is an empty blob, not NULL. */
    dlq_entry empty = e;
    empty.payload = NULL;
    empty.payload_len = 0;
    empty.props = NULL;
    empty.props_len = 0;
    int64_t empty_id = 0;
    CHECK(dlq_store_put(st, &empty, 100, &empty_id, NULL) == 0, "put empty");
    memset(&s, 0, sizeof s);
    CHECK(dlq_store_get(st, empty_id, collect, &s) == 1 && s.payload_len == 0 && s.props_len == 0, "empty back");
    long n = 0;
    CHECK(dlq_store_delete(st, &empty_id, 1, 0, NULL, &n) == 0 && n == 1, "delete one: %ld", n);
    CHECK(dlq_store_delete(st, &empty_id, 1, 0, NULL, &n) == 0 && n == 0, "delete it again: 0");

    /* Filters and paging: 10 on a/+ (times 2000..2009), 5 on b/#. */
    int64_t a_ids[10];
    for (int i = 0; i < 10; i++) {
        char t[16];
        snprintf(t, sizeof t, "a/%d", i);
        a_ids[i] = put(st, t, "a/+", 2000 + i, 100, NULL);
    }
    for (int i = 0; i < 5; i++) put(st, "b/x", "b/#", 3000 + i, 100, NULL);
    CHECK(dlq_store_count(st, NULL, &n) == 0 && n == 16, "16 records: %ld", n);
    dlq_filter f = { .route = "a/+" };
    CHECK(dlq_store_count(st, &f, &n) == 0 && n == 10, "10 on a/+: %ld", n);
    memset(&s, 0, sizeof s);
    f.limit = 4;
    CHECK(dlq_store_list(st, &f, collect, &s) == 0 && s.n == 4, "limit 4: %d", s.n);
    CHECK(s.ids[0] == a_ids[9] && s.ids[3] == a_ids[6], "newest first");
    f.before_id = s.ids[3];
    memset(&s, 0, sizeof s);
    CHECK(dlq_store_list(st, &f, collect, &s) == 0 && s.n == 4 && s.ids[0] == a_ids[5] && s.ids[3] == a_ids[2],
          "the next page starts below the last id");
    f = (dlq_filter){ .route = "a/+", .since_ms = 2007 };
    memset(&s, 0, sizeof s);
    CHECK(dlq_store_list(st, &f, collect, &s) == 0 && s.n == 3, "since: %d", s.n);
    f = (dlq_filter){ 0 };
    memset(&s, 0, sizeof s);
    CHECK(dlq_store_list(st, &f, collect, &s) == 0 && s.n == 16, "no filter: all %d", s.n);
    long per[2] = { 0, 0 };
    CHECK(dlq_store_count_routes(st, count_route, per) == 0 && per[0] == 10 && per[1] == 5, "per route %ld %ld",
          per[0], per[1]);

    /* Replay: asked, claimed oldest first by an owner, given back, done, failed. */
    f = (dlq_filter){ .route = "b/#" };
    CHECK(dlq_store_ask_replay(st, NULL, 0, 1, &f, &n) == 0 && n == 5, "ask all of b/#: %ld", n);
    CHECK(dlq_store_ask_replay(st, NULL, 0, 1, &f, &n) == 0 && n == 0, "asked already: %ld", n);
    CHECK(dlq_store_ask_replay(st, &a_ids[0], 1, 0, NULL, &n) == 0 && n == 1, "ask one by id");
    memset(&s, 0, sizeof s);
    CHECK(dlq_store_claim(st, "slot 1", 3, collect, &s) == 0 && s.n == 3, "claim 3: %d", s.n);
    CHECK(s.ids[0] == a_ids[0] && s.ids[1] < s.ids[2], "oldest first");
    CHECK(s.state == DLQ_REPLAYING && !strcmp(s.owner, "slot 1"), "replaying, owned: %d %s", s.state, s.owner);
    int64_t c0 = s.ids[0], c1 = s.ids[1], c2 = s.ids[2];
    memset(&s, 0, sizeof s);
    CHECK(dlq_store_claim(st, "slot 2", 10, refuse_second, &s) == 0 && s.n == 1, "refused the second: %d", s.n);
    int64_t c3 = s.ids[0];
    memset(&s, 0, sizeof s);
    CHECK(dlq_store_claim(st, "slot 2", 10, collect, &s) == 0 && s.n == 2, "the refused one stayed asked: %d", s.n);
    /* slot 1 kept c1 only: c0 and c2 are asked again. */
    CHECK(dlq_store_unclaim(st, "slot 1", &c1, 1) == 0, "unclaim");
    memset(&s, 0, sizeof s);
    CHECK(dlq_store_get(st, c0, collect, &s) == 1 && s.state == DLQ_REPLAY_ASKED && !strcmp(s.owner, "(null)"),
          "c0 given back: %d", s.state);
    memset(&s, 0, sizeof s);
    CHECK(dlq_store_get(st, c1, collect, &s) == 1 && s.state == DLQ_REPLAYING, "c1 kept: %d", s.state);
    CHECK(dlq_store_replay_done(st, c1) == 0, "replay done");
    CHECK(dlq_store_get(st, c1, collect, &s) == 0, "gone after done");
    CHECK(dlq_store_replay_done(st, c1) == 0, "done twice is fine");
    dlq_entry again = { .attempts = 2, .reason = "failed", .error = "still broken", .traceback = "tb", .time_ms = 9000 };
    CHECK(dlq_store_replay_failed(st, c3, &again) == 0, "replay failed");
    memset(&s, 0, sizeof s);
    CHECK(dlq_store_get(st, c3, collect, &s) == 1 && s.state == DLQ_STORED && s.replays == 1 && s.attempts == 2 &&
              !strcmp(s.reason, "failed") && !strcmp(s.error, "still broken") && !strcmp(s.owner, "(null)") &&
              !strcmp(s.route, "b/#") && s.payload_len == 1,
          "stored again: state %d replays %d %s %s", s.state, s.replays, s.reason, s.error);
    /* Deleted while replayed: a failure stores it again, not lost. */
    CHECK(dlq_store_delete(st, &c2, 1, 0, NULL, &n) == 0 && n == 1, "delete c2");
    dlq_entry full = e;
    full.reason = "error";
    CHECK(dlq_store_replay_failed(st, c2, &full) == 0, "failed after delete");
    CHECK(dlq_store_count(st, NULL, &n) == 0 && n == 15, "came back as a new record: %ld", n);

    /* Bulk delete by route. */
    f = (dlq_filter){ .route = "a/+" };
    CHECK(dlq_store_delete(st, NULL, 0, 1, &f, &n) == 0 && n == 10, "delete --all --route a/+: %ld", n);
    /* Left: b/# (3), the first binary one and c2 back as a new record. */
    CHECK(dlq_store_count(st, NULL, &n) == 0 && n == 5, "5 left: %ld", n);
    CHECK(dlq_store_delete(st, NULL, 0, 1, NULL, &n) == 0 && n == 5, "delete all: %ld", n);
    CHECK(dlq_store_count(st, NULL, &n) == 0 && n == 0, "empty: %ld", n);

    /* The bound: max 3 keeps the newest 3, the others counted. */
    dropped = 0;
    int64_t last[5];
    for (int i = 0; i < 5; i++) last[i] = put(st, "c/1", "c/+", 5000 + i, 3, &dropped);
    CHECK(dropped == 2, "2 dropped: %ld", dropped);
    memset(&s, 0, sizeof s);
    CHECK(dlq_store_list(st, NULL, collect, &s) == 0 && s.n == 3 && s.ids[0] == last[4] && s.ids[2] == last[2],
          "the newest 3 stay");
    int64_t oldest = 0;
    CHECK(dlq_store_oldest(st, &oldest) == 0 && oldest == 5002, "the oldest's time: %lld", (long long)oldest);
    dlq_store_close(st);

    /* Ids are not reused after deletes, and records survive a reopen. */
    CHECK(dlq_store_open(path, 0, &st, err, sizeof err) == 0, "reopen: %s", err);
    CHECK(dlq_store_count(st, NULL, &n) == 0 && n == 3, "3 after reopen: %ld", n);
    CHECK(dlq_store_delete(st, NULL, 0, 1, NULL, &n) == 0 && n == 3, "delete all");
    int64_t next = put(st, "d/1", "d/+", 6000, 3, NULL);
    CHECK(next > last[4], "a new id after the deleted ones: %lld > %lld", (long long)next, (long long)last[4]);
    dlq_store_close(st);

    /* A file that is not a store is a clear error naming it. */
    char bad[300];
    snprintf(bad, sizeof bad, "%s/bad.db", dir);
    FILE *fp = fopen(bad, "w");
    if (fp) {
        fputs("not a database, but long enough to have a header of its own.......................................",
              fp);
        fclose(fp);
    }
    CHECK(dlq_store_open(bad, 0, &st, err, sizeof err) == -1 && strstr(err, bad), "not a database: %s", err);

    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) printf("could not remove %s\n", dir);
    return TEST_SUMMARY("test_dlq_store");
}
