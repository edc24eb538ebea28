/* The dead-letter store (dlq_store.h) in SQLite. One table, ids that are
 * never reused (AUTOINCREMENT: a replay names its record by id, and a new
 * record must not take the id of one deleted meanwhile), and a row count kept
 * by triggers so that the bound costs no scan per put. WAL with
 * synchronous=NORMAL: a commit survives the crash of any process; only a
 * power loss may take the last commits back. */
#include "dlq_store.h"

#include <sqlite3.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DLQ_SCHEMA_VERSION 1
#define DLQ_BUSY_MS 5000

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS dead_letters ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " time_ms INTEGER NOT NULL,"
    " topic TEXT NOT NULL,"
    " route TEXT NOT NULL,"
    " payload BLOB NOT NULL,"
    " qos INTEGER NOT NULL,"
    " retain INTEGER NOT NULL,"
    " props BLOB,"
    " attempts INTEGER NOT NULL,"
    " reason TEXT NOT NULL,"
    " error TEXT,"
    " traceback TEXT,"
    " replays INTEGER NOT NULL DEFAULT 0,"
    " state INTEGER NOT NULL DEFAULT 0,"
    " owner TEXT);"
    "CREATE INDEX IF NOT EXISTS dead_letters_route ON dead_letters(route);"
    "CREATE INDEX IF NOT EXISTS dead_letters_state ON dead_letters(state);"
    "CREATE TABLE IF NOT EXISTS dlq_meta (k TEXT PRIMARY KEY, n INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO dlq_meta VALUES ('records', (SELECT count(*) FROM dead_letters));"
    "CREATE TRIGGER IF NOT EXISTS dead_letters_ins AFTER INSERT ON dead_letters"
    " BEGIN UPDATE dlq_meta SET n = n + 1 WHERE k = 'records'; END;"
    "CREATE TRIGGER IF NOT EXISTS dead_letters_del AFTER DELETE ON dead_letters"
    " BEGIN UPDATE dlq_meta SET n = n - 1 WHERE k = 'records'; END;";

#define COLS "id, time_ms, topic, route, payload, qos, retain, props, attempts, reason, error, traceback, " \
             "replays, state, owner"
/* The records a filter selects: ?1 route (unused: any), ?2 since, ?3 before
 * id (0: none), ?4 state (-1: any). With a route, `route = ?1` lets SQLite
 * use the route index (an `?1 IS NULL OR` would make it scan the table). */
#define FILTER_REST "time_ms >= ?2 AND (?3 = 0 OR id < ?3) AND (?4 < 0 OR state = ?4)"
#define FILTER FILTER_REST
#define FILTER_R "route = ?1 AND " FILTER_REST

enum {
    ST_INSERT, ST_COUNT_ALL, ST_TRIM, ST_GET, ST_LIST, ST_COUNT, ST_ROUTES, ST_DEL_ID, ST_DEL_ALL,
    ST_ASK_ID, ST_ASK_ALL, ST_LIST_R, ST_COUNT_R, ST_DEL_ALL_R, ST_ASK_ALL_R, ST_CLAIM_IDS, ST_CLAIM_SET, ST_CLAIM_BACK, ST_OWNED, ST_UNCLAIM, ST_FAILED,
    ST_OLDEST, ST_BEGIN, ST_COMMIT, ST_ROLLBACK, ST_COUNT_
};

static const char *const SQL[ST_COUNT_] = {
    [ST_INSERT] = "INSERT INTO dead_letters (time_ms, topic, route, payload, qos, retain, props, attempts, reason,"
                  " error, traceback, replays) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    [ST_COUNT_ALL] = "SELECT n FROM dlq_meta WHERE k = 'records'",
    [ST_TRIM] = "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY id LIMIT ?1)",
    [ST_GET] = "SELECT " COLS " FROM dead_letters WHERE id = ?1",
    [ST_LIST] = "SELECT " COLS " FROM dead_letters WHERE " FILTER " ORDER BY id DESC LIMIT ?5",
    [ST_COUNT] = "SELECT count(*) FROM dead_letters WHERE " FILTER,
    [ST_ROUTES] = "SELECT route, count(*) FROM dead_letters GROUP BY route ORDER BY route",
    [ST_DEL_ID] = "DELETE FROM dead_letters WHERE id = ?1",
    [ST_DEL_ALL] = "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters WHERE " FILTER
                   " ORDER BY id DESC LIMIT ?5)",
    [ST_ASK_ID] = "UPDATE dead_letters SET state = 1 WHERE id = ?1 AND state = 0",
    [ST_ASK_ALL] = "UPDATE dead_letters SET state = 1 WHERE id IN (SELECT id FROM dead_letters WHERE " FILTER
                   " ORDER BY id DESC LIMIT ?5)",
    [ST_LIST_R] = "SELECT " COLS " FROM dead_letters WHERE " FILTER_R " ORDER BY id DESC LIMIT ?5",
    [ST_COUNT_R] = "SELECT count(*) FROM dead_letters WHERE " FILTER_R,
    [ST_DEL_ALL_R] = "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters WHERE " FILTER_R
                     " ORDER BY id DESC LIMIT ?5)",
    [ST_ASK_ALL_R] = "UPDATE dead_letters SET state = 1 WHERE id IN (SELECT id FROM dead_letters WHERE " FILTER_R
                     " ORDER BY id DESC LIMIT ?5)",
    [ST_CLAIM_IDS] = "SELECT id FROM dead_letters WHERE state = 1 ORDER BY id LIMIT ?1",
    [ST_CLAIM_SET] = "UPDATE dead_letters SET state = 2, owner = ?2 WHERE id = ?1 AND state = 1",
    [ST_CLAIM_BACK] = "UPDATE dead_letters SET state = 1, owner = NULL WHERE id = ?1",
    [ST_OWNED] = "SELECT id FROM dead_letters WHERE state = 2 AND owner = ?1",
    [ST_UNCLAIM] = "UPDATE dead_letters SET state = 1, owner = NULL WHERE id = ?1 AND state = 2",
    [ST_FAILED] = "UPDATE dead_letters SET time_ms = ?2, attempts = ?3, reason = ?4, error = ?5, traceback = ?6,"
                  " replays = replays + 1, state = 0, owner = NULL WHERE id = ?1",
    [ST_OLDEST] = "SELECT time_ms FROM dead_letters ORDER BY id LIMIT 1",
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
};

struct dlq_store {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *st[ST_COUNT_];
    char err[512];
};

static void set_err(dlq_store *s, const char *what)
{
    snprintf(s->err, sizeof s->err, "dead-letter store %s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

const char *dlq_store_error(const dlq_store *s)
{
    return s ? s->err : "no dead-letter store";
}

/* The prepared statement k, reset and unbound; NULL with the error set. */
static sqlite3_stmt *stmt(dlq_store *s, int k)
{
    if (!s->st[k] && sqlite3_prepare_v3(s->db, SQL[k], -1, SQLITE_PREPARE_PERSISTENT, &s->st[k], NULL) != SQLITE_OK) {
        set_err(s, "preparing a statement");
        return NULL;
    }
    sqlite3_reset(s->st[k]);
    sqlite3_clear_bindings(s->st[k]);
    return s->st[k];
}

/* Runs a statement that returns no rows; 0 or -1 with the error set. */
static int run(dlq_store *s, sqlite3_stmt *q, const char *what)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return 0;
    set_err(s, what);
    return -1;
}

static int begin(dlq_store *s)
{
    sqlite3_stmt *q = stmt(s, ST_BEGIN);
    return q ? run(s, q, "beginning a transaction") : -1;
}

static int commit(dlq_store *s)
{
    sqlite3_stmt *q = stmt(s, ST_COMMIT);
    return q ? run(s, q, "committing") : -1;
}

/* Ends a failed transaction; the error already set is kept. */
static void rollback(dlq_store *s)
{
    if (sqlite3_get_autocommit(s->db)) return;
    char keep[sizeof s->err];
    memcpy(keep, s->err, sizeof keep);
    sqlite3_stmt *q = stmt(s, ST_ROLLBACK);
    if (q) run(s, q, "rolling back");
    memcpy(s->err, keep, sizeof keep);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int exec(dlq_store *s, const char *sql, const char *what)
{
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) == SQLITE_OK) return 0;
    set_err(s, what);
    return -1;
}

/* Schema, WAL and the per-connection settings. */
static int setup(dlq_store *s, int writable)
{
    sqlite3_busy_timeout(s->db, DLQ_BUSY_MS);
    sqlite3_stmt *q = NULL;
    int version = -1;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
        version = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    if (version < 0) {
        set_err(s, "reading it");
        return -1;
    }
    if (version > DLQ_SCHEMA_VERSION) {
        snprintf(s->err, sizeof s->err, "dead-letter store %s: made by a newer routemq (schema %d, this one knows %d)",
                 s->path, version, DLQ_SCHEMA_VERSION);
        return -1;
    }
    if (exec(s, "PRAGMA synchronous=NORMAL", "setting synchronous=NORMAL")) return -1;
    if (!writable) return 0;
    if (exec(s, "PRAGMA journal_mode=WAL", "turning on WAL")) return -1;
    if (version < DLQ_SCHEMA_VERSION) {
        if (exec(s, "BEGIN IMMEDIATE", "creating its tables")) return -1;
        if (exec(s, SCHEMA, "creating its tables") || exec(s, "PRAGMA user_version=1", "creating its tables") ||
            exec(s, "COMMIT", "creating its tables")) {
            rollback(s);
            return -1;
        }
    }
    return 0;
}

int dlq_store_open(const char *path, int create, dlq_store **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!path || !*path) {
        snprintf(err, errlen, "no dead-letter store configured (ROUTEMQ_DLQ_STORE, or a run directory)");
        errno = EINVAL;
        return -1;
    }
    struct stat stb;
    if (stat(path, &stb)) {
        int e = errno;
        if (e != ENOENT || !create) {
            snprintf(err, errlen, "dead-letter store %s: %s", path, strerror(e));
            errno = e;
            return -1;
        }
        /* SQLite would create it with the umask's mode: the records hold
         * application payloads, so only the instance's user reads them. */
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST) {
            e = errno;
            snprintf(err, errlen, "cannot create the dead-letter store %s: %s", path, strerror(e));
            errno = e;
            return -1;
        }
        if (fd >= 0) close(fd);
    }
    dlq_store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        snprintf(err, errlen, "dead-letter store %s: out of memory", path);
        errno = ENOMEM;
        return -1;
    }
    /* READWRITE opens read-only when the file is write-protected: list and
     * show still work for a user who may only read it. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open the dead-letter store %s: %s", path,
                 s->db ? sqlite3_errmsg(s->db) : "out of memory");
        dlq_store_close(s);
        errno = EIO;
        return -1;
    }
    sqlite3_extended_result_codes(s->db, 1);
    if (setup(s, !sqlite3_db_readonly(s->db, "main"))) {
        snprintf(err, errlen, "%s", s->err);
        dlq_store_close(s);
        errno = EIO;
        return -1;
    }
    *out = s;
    return 0;
}

void dlq_store_close(dlq_store *s)
{
    if (!s) return;
    for (int i = 0; i < ST_COUNT_; i++) sqlite3_finalize(s->st[i]);
    sqlite3_close(s->db);
    free(s->path);
    free(s);
}

static void bind_text(sqlite3_stmt *q, int i, const char *t)
{
    if (t) sqlite3_bind_text(q, i, t, -1, SQLITE_STATIC);
    else sqlite3_bind_null(q, i);
}

/* Records in the store, from the trigger-kept count. */
static int count_all(dlq_store *s, long *n)
{
    sqlite3_stmt *q = stmt(s, ST_COUNT_ALL);
    if (!q) return -1;
    int rc = sqlite3_step(q);
    *n = rc == SQLITE_ROW ? (long)sqlite3_column_int64(q, 0) : 0;
    sqlite3_reset(q);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) return 0;
    set_err(s, "counting records");
    return -1;
}

/* Inserts e inside the caller's transaction, with replays, then trims to max. */
static int insert(dlq_store *s, const dlq_entry *e, int replays, long max, int64_t *id, long *dropped)
{
    sqlite3_stmt *q = stmt(s, ST_INSERT);
    if (!q) return -1;
    sqlite3_bind_int64(q, 1, e->time_ms ? e->time_ms : now_ms());
    sqlite3_bind_text(q, 2, e->topic ? e->topic : "", e->topic ? (int)e->topic_len : 0, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, e->route ? e->route : "", -1, SQLITE_STATIC);
    /* A zero-length blob with a NULL pointer would be stored as NULL. */
    sqlite3_bind_blob(q, 4, e->payload_len ? e->payload : "", (int)e->payload_len, SQLITE_STATIC);
    sqlite3_bind_int(q, 5, e->qos);
    sqlite3_bind_int(q, 6, e->retain ? 1 : 0);
    if (e->props && e->props_len) sqlite3_bind_blob(q, 7, e->props, (int)e->props_len, SQLITE_STATIC);
    else sqlite3_bind_null(q, 7);
    sqlite3_bind_int(q, 8, e->attempts);
    sqlite3_bind_text(q, 9, e->reason ? e->reason : "error", -1, SQLITE_STATIC);
    bind_text(q, 10, e->error);
    bind_text(q, 11, e->traceback);
    sqlite3_bind_int(q, 12, replays);
    if (run(s, q, "adding a record")) return -1;
    if (id) *id = sqlite3_last_insert_rowid(s->db);
    long n;
    if (count_all(s, &n)) return -1;
    if (max > 0 && n > max) {
        if (!(q = stmt(s, ST_TRIM))) return -1;
        sqlite3_bind_int64(q, 1, n - max);
        if (run(s, q, "deleting the oldest records")) return -1;
        if (dropped) *dropped += sqlite3_changes(s->db);
    }
    return 0;
}

int dlq_store_put(dlq_store *s, const dlq_entry *e, long max, int64_t *id, long *dropped)
{
    if (e->payload_len > INT32_MAX || e->topic_len > INT32_MAX || e->props_len > INT32_MAX) {
        snprintf(s->err, sizeof s->err, "dead-letter store %s: record too large", s->path);
        return -1;
    }
    long gone = 0;
    if (begin(s)) return -1;
    if (insert(s, e, 0, max, id, &gone) || commit(s)) {
        rollback(s);
        return -1;
    }
    if (dropped) *dropped += gone;
    return 0;
}

/* The row q stands on, as an entry pointing into SQLite's buffers. */
static void row(sqlite3_stmt *q, dlq_entry *e)
{
    memset(e, 0, sizeof *e);
    e->id = sqlite3_column_int64(q, 0);
    e->time_ms = sqlite3_column_int64(q, 1);
    e->topic = (const char *)sqlite3_column_text(q, 2);
    e->topic_len = (size_t)sqlite3_column_bytes(q, 2);
    e->route = (const char *)sqlite3_column_text(q, 3);
    e->payload = sqlite3_column_blob(q, 4);
    e->payload_len = (size_t)sqlite3_column_bytes(q, 4);
    if (!e->payload) e->payload = "";
    e->qos = sqlite3_column_int(q, 5);
    e->retain = sqlite3_column_int(q, 6);
    e->props = sqlite3_column_blob(q, 7);
    e->props_len = (size_t)sqlite3_column_bytes(q, 7);
    e->attempts = sqlite3_column_int(q, 8);
    e->reason = (const char *)sqlite3_column_text(q, 9);
    e->error = (const char *)sqlite3_column_text(q, 10);
    e->traceback = (const char *)sqlite3_column_text(q, 11);
    e->replays = sqlite3_column_int(q, 12);
    e->state = sqlite3_column_int(q, 13);
    e->owner = (const char *)sqlite3_column_text(q, 14);
    if (!e->topic) e->topic = "";
    if (!e->route) e->route = "";
    if (!e->reason) e->reason = "";
}

/* Steps q, calling fn per row; 0, or -1 with the error set. */
static int walk(dlq_store *s, sqlite3_stmt *q, dlq_each_fn fn, void *arg, long *rows)
{
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        dlq_entry e;
        row(q, &e);
        if (rows) (*rows)++;
        if (fn && fn(&e, arg)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(q);
    if (rc == SQLITE_DONE) return 0;
    set_err(s, "reading records");
    return -1;
}

static void bind_filter(sqlite3_stmt *q, const dlq_filter *f, int state)
{
    bind_text(q, 1, f ? f->route : NULL);
    sqlite3_bind_int64(q, 2, f ? f->since_ms : 0);
    sqlite3_bind_int64(q, 3, f ? f->before_id : 0);
    sqlite3_bind_int(q, 4, state);
    sqlite3_bind_int64(q, 5, f && f->limit > 0 ? f->limit : -1);
}

/* The statement k, or its by-route variant kr when f names a route. */
static int pick(const dlq_filter *f, int k, int kr)
{
    return f && f->route ? kr : k;
}

int dlq_store_list(dlq_store *s, const dlq_filter *f, dlq_each_fn fn, void *arg)
{
    sqlite3_stmt *q = stmt(s, pick(f, ST_LIST, ST_LIST_R));
    if (!q) return -1;
    bind_filter(q, f, -1);
    return walk(s, q, fn, arg, NULL);
}

int dlq_store_get(dlq_store *s, int64_t id, dlq_each_fn fn, void *arg)
{
    sqlite3_stmt *q = stmt(s, ST_GET);
    if (!q) return -1;
    sqlite3_bind_int64(q, 1, id);
    long rows = 0;
    if (walk(s, q, fn, arg, &rows)) return -1;
    return rows > 0;
}

int dlq_store_count(dlq_store *s, const dlq_filter *f, long *count)
{
    if (!f) return count_all(s, count);
    sqlite3_stmt *q = stmt(s, pick(f, ST_COUNT, ST_COUNT_R));
    if (!q) return -1;
    bind_filter(q, f, -1);
    int rc = sqlite3_step(q);
    long n = rc == SQLITE_ROW ? (long)sqlite3_column_int64(q, 0) : 0;
    sqlite3_reset(q);
    if (rc != SQLITE_ROW) {
        set_err(s, "counting records");
        return -1;
    }
    /* The count ignores the limit in SQL (an aggregate has one row). */
    *count = f->limit > 0 && n > f->limit ? f->limit : n;
    return 0;
}

int dlq_store_oldest(dlq_store *s, int64_t *time_ms)
{
    sqlite3_stmt *q = stmt(s, ST_OLDEST);
    if (!q) return -1;
    int rc = sqlite3_step(q);
    *time_ms = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_reset(q);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) return 0;
    set_err(s, "reading the oldest record");
    return -1;
}

int dlq_store_count_routes(dlq_store *s, int (*fn)(const char *route, long count, void *arg), void *arg)
{
    sqlite3_stmt *q = stmt(s, ST_ROUTES);
    if (!q) return -1;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *route = (const char *)sqlite3_column_text(q, 0);
        if (fn(route ? route : "", (long)sqlite3_column_int64(q, 1), arg)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(q);
    if (rc == SQLITE_DONE) return 0;
    set_err(s, "counting records per route");
    return -1;
}

/* Runs by_id for each of ids, or by_all with f, in one transaction; the rows changed in *done. */
static int change(dlq_store *s, int by_id, int by_all, int state, const int64_t *ids, int n, int all,
                  const dlq_filter *f, long *done, const char *what)
{
    long changed = 0;
    if (begin(s)) return -1;
    if (all) {
        sqlite3_stmt *q = stmt(s, pick(f, by_all, by_all == ST_DEL_ALL ? ST_DEL_ALL_R : ST_ASK_ALL_R));
        if (!q) goto fail;
        bind_filter(q, f, state);
        if (run(s, q, what)) goto fail;
        changed = sqlite3_changes(s->db);
    } else {
        for (int i = 0; i < n; i++) {
            sqlite3_stmt *q = stmt(s, by_id);
            if (!q) goto fail;
            sqlite3_bind_int64(q, 1, ids[i]);
            if (run(s, q, what)) goto fail;
            changed += sqlite3_changes(s->db);
        }
    }
    if (commit(s)) goto fail;
    if (done) *done = changed;
    return 0;
fail:
    rollback(s);
    return -1;
}

int dlq_store_delete(dlq_store *s, const int64_t *ids, int n, int all, const dlq_filter *f, long *done)
{
    return change(s, ST_DEL_ID, ST_DEL_ALL, -1, ids, n, all, f, done, "deleting records");
}

int dlq_store_ask_replay(dlq_store *s, const int64_t *ids, int n, int all, const dlq_filter *f, long *done)
{
    return change(s, ST_ASK_ID, ST_ASK_ALL, DLQ_STORED, ids, n, all, f, done, "asking for replays");
}

int dlq_store_claim(dlq_store *s, const char *owner, long limit, dlq_each_fn fn, void *arg)
{
    if (limit <= 0) return 0;
    int64_t small[64], *ids = limit <= 64 ? small : malloc((size_t)limit * sizeof *ids);
    if (!ids) {
        snprintf(s->err, sizeof s->err, "dead-letter store %s: out of memory", s->path);
        return -1;
    }
    long n = 0;
    int ret = -1;
    if (begin(s)) goto out;
    /* The ids first: the rows change state while they are handed out. */
    sqlite3_stmt *q = stmt(s, ST_CLAIM_IDS);
    if (!q) goto fail;
    sqlite3_bind_int64(q, 1, limit);
    int rc = SQLITE_DONE;
    while (n < limit && (rc = sqlite3_step(q)) == SQLITE_ROW) ids[n++] = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    if (n < limit && rc != SQLITE_DONE) {
        set_err(s, "reading records asked for replay");
        goto fail;
    }
    for (long i = 0; i < n; i++) {
        if (!(q = stmt(s, ST_CLAIM_SET))) goto fail;
        sqlite3_bind_int64(q, 1, ids[i]);
        bind_text(q, 2, owner);
        if (run(s, q, "taking a record for replay")) goto fail;
        if (!(q = stmt(s, ST_GET))) goto fail;
        sqlite3_bind_int64(q, 1, ids[i]);
        int stop = 0;
        if ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            dlq_entry e;
            row(q, &e);
            stop = fn(&e, arg);
        }
        sqlite3_reset(q);
        if (rc != SQLITE_ROW) {
            set_err(s, "reading a record taken for replay");
            goto fail;
        }
        if (stop) {
            /* fn could not take it: it stays asked for, like those after it. */
            if (!(q = stmt(s, ST_CLAIM_BACK))) goto fail;
            sqlite3_bind_int64(q, 1, ids[i]);
            if (run(s, q, "giving a record back")) goto fail;
            break;
        }
    }
    if (commit(s)) goto fail;
    ret = 0;
    goto out;
fail:
    rollback(s);
out:
    if (ids != small) free(ids);
    return ret;
}

static int kept(const int64_t *keep, int n, int64_t id)
{
    for (int i = 0; i < n; i++)
        if (keep[i] == id) return 1;
    return 0;
}

int dlq_store_unclaim(dlq_store *s, const char *owner, const int64_t *keep, int n)
{
    if (begin(s)) return -1;
    /* Few rows are ever owned at once (a worker's keep): collected first. */
    int64_t *ids = NULL;
    size_t nids = 0, cap = 0;
    sqlite3_stmt *q = stmt(s, ST_OWNED);
    if (!q) goto fail;
    bind_text(q, 1, owner);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(q, 0);
        if (kept(keep, n, id)) continue;
        if (nids == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            int64_t *g = realloc(ids, ncap * sizeof *g);
            if (!g) {
                sqlite3_reset(q);
                snprintf(s->err, sizeof s->err, "dead-letter store %s: out of memory", s->path);
                goto fail;
            }
            ids = g;
            cap = ncap;
        }
        ids[nids++] = id;
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        set_err(s, "reading the records a worker took");
        goto fail;
    }
    for (size_t i = 0; i < nids; i++) {
        if (!(q = stmt(s, ST_UNCLAIM))) goto fail;
        sqlite3_bind_int64(q, 1, ids[i]);
        if (run(s, q, "giving records back")) goto fail;
    }
    if (commit(s)) goto fail;
    free(ids);
    return 0;
fail:
    free(ids);
    rollback(s);
    return -1;
}

int dlq_store_replay_done(dlq_store *s, int64_t id)
{
    sqlite3_stmt *q = stmt(s, ST_DEL_ID);
    if (!q) return -1;
    sqlite3_bind_int64(q, 1, id);
    return run(s, q, "removing a replayed record");
}

int dlq_store_replay_failed(dlq_store *s, int64_t id, const dlq_entry *e)
{
    if (begin(s)) return -1;
    sqlite3_stmt *q = stmt(s, ST_FAILED);
    if (!q) goto fail;
    sqlite3_bind_int64(q, 1, id);
    sqlite3_bind_int64(q, 2, e->time_ms ? e->time_ms : now_ms());
    sqlite3_bind_int(q, 3, e->attempts);
    sqlite3_bind_text(q, 4, e->reason ? e->reason : "error", -1, SQLITE_STATIC);
    bind_text(q, 5, e->error);
    bind_text(q, 6, e->traceback);
    if (run(s, q, "storing a failed replay")) goto fail;
    /* Deleted while it was replayed: the message failed again and is not
     * lost for that; it comes back as a new record. */
    if (sqlite3_changes(s->db) == 0 && insert(s, e, 1, 0, NULL, NULL)) goto fail;
    if (commit(s)) goto fail;
    return 0;
fail:
    rollback(s);
    return -1;
}
