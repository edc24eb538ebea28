/* A message's way through the worker, around its handler: intake (match the
 * topic, skip the broker's resends and redundant copies, keep the message),
 * the queue and the pump that start handlers, and completion (accounting,
 * a retry's hand-off, finishing once its publishes are acknowledged).
 * Running the handler in Lua is worker_coro.c; replaying what a dead worker
 * left, worker_replay.c. */
#include "worker_internal.h"
#include "log.h"
#include "worker_props.h"
#include "route_stats.h"
#include "hash.h"
#include "shm_errors.h"

#include <errno.h>
#include <mqtt_protocol.h>
#include <stdlib.h>
#include <string.h>

#define PROPS_MAX (64 * 1024)  /* packed MQTT 5 properties kept with a message */

/* An application with more routes than a slot can count keeps the rest in
 * the slot totals only (w->route_stat). */
static int stat_of(const worker *w, int rid)
{
    return rid >= 1 && rid <= SHM_ROUTE_STATS ? w->route_stat[rid] : -1;
}

/* Maps the application's routes to this slot's counters; 0 ok, -1 out of memory. */
static int bind_route_stats(worker *w)
{
    w->route_stat = malloc((SHM_ROUTE_STATS + 1) * sizeof *w->route_stat);
    if (!w->route_stat) return -1;
    int missed = route_stats_bind_app(w->shm, &w->app, w->route_stat, SHM_ROUTE_STATS + 1);
    if (missed) log_warn("%d route%s counted under route=\"" SHM_ROUTE_OTHER "\": this slot has counted %d patterns "
                         "already", missed, missed == 1 ? " is" : "s are", SHM_ROUTE_TABLE - 1);
    return 0;
}

int worker_dispatch_setup(worker *w)
{
    char err[2048];
    w->trie = topic_trie_new();
    if (!w->trie) { log_error("out of memory"); return -1; }
    for (int i = 0; i < w->app.nroutes; i++) {
        route_info *r = &w->app.routes[i];
        if (topic_trie_add(w->trie, r->filter, strlen(r->filter), r->index, err, sizeof err)) {
            log_error("route %s: %s", r->pattern, err);
            return -1;
        }
    }
    w->props_buf = malloc(PROPS_MAX);
    if (!w->props_buf || bind_route_stats(w)) { log_error("out of memory"); return -1; }
    return worker_coro_setup(w);
}

#define ERRLOG_WINDOW_NS 10000000000LL
#define ERRLOG_LINES 10

static void errlog_missed(int n)
{
    if (n) log_warn("%d handler errors were not logged (rate limit: %d per 10 s)", n, ERRLOG_LINES);
}

void worker_errlog_flush(worker *w, int64_t now)
{
    if (w->errlog.missed) errlog_missed(log_limit_roll(&w->errlog, now, ERRLOG_WINDOW_NS));
}

/* 1 when a handler error line may be logged now: at most 10 per 10 s, the
 * rest counted and summed up once the window is over (here, or by
 * worker.c's periodic when no error comes after). */
static int errlog_allow(worker *w)
{
    int missed, allowed = log_limit_allow(&w->errlog, shm_now_ns(), ERRLOG_WINDOW_NS, ERRLOG_LINES, &missed);
    errlog_missed(missed);
    return allowed;
}

static void log_handler_error(worker *w, const route_info *r, const char *topic, const char *err, const char *tb)
{
    /* Every error reaches /errors, also those the log's rate limit drops. */
    shm_errors_record(w->shm, r ? r->pattern : "?", topic, err, tb);
    if (!errlog_allow(w)) return;
    log_with(LOGL_ERROR, &(log_fields){ .route = r ? r->pattern : "?", .topic = topic, .error = err, .traceback = tb },
             "handler error");
}

/* FNV-1a over the topic, the payload's length and its first 4 KiB. */
static uint64_t content_hash(const char *topic, size_t tlen, const void *payload, size_t plen)
{
    uint64_t h = hash_fnv1a(HASH_FNV1A_INIT, topic, tlen);
    h = hash_fnv1a_word(h, plen);
    return hash_fnv1a(h, payload, plen < 4096 ? plen : 4096);
}

/* Deliveries are remembered as (packet id << 48 | content hash) at the
 * packet id's index. Packet ids are reused only after 65535 others, so the
 * same id with the same content within SHM_SEEN deliveries is a resend. */
static uint64_t seen_entry(int mid, uint64_t hash)
{
    return ((uint64_t)(uint16_t)mid << 48) | (hash & 0xFFFFFFFFFFFFULL);
}

static int seen_before(worker *w, int mid, uint64_t hash)
{
    return mid > 0 && w->keep.km.h->seen.entry[(unsigned)mid % SHM_SEEN] == seen_entry(mid, hash);
}

/* Called once the message is kept in the in-flight record: a death between
 * the two then leads to a replay, never to a skipped resend. */
static void seen_remember(worker *w, int mid, uint64_t hash)
{
    if (mid > 0) w->keep.km.h->seen.entry[(unsigned)mid % SHM_SEEN] = seen_entry(mid, hash);
}

void worker_forget_seen(worker *w)
{
    memset(&w->keep.km.h->seen, 0, sizeof w->keep.km.h->seen);
}

/* A message taken and not started yet waits here, in arrival order. */
void worker_enqueue(worker *w, int id)
{
    worker_queue *q = &w->queue;
    q->ids[q->tail] = id;
    q->tail = (q->tail + 1) % q->cap;
}

static int dequeue(worker *w)
{
    worker_queue *q = &w->queue;
    if (q->head == q->tail) return -1;
    int id = q->ids[q->head];
    q->head = (q->head + 1) % q->cap;
    return id;
}

int worker_queue_len(const worker *w)
{
    const worker_queue *q = &w->queue;
    return (q->tail - q->head + q->cap) % q->cap;
}

int worker_can_start(const worker *w)
{
    return worker_can_start_over(w, 0);
}

int worker_can_start_over(const worker *w, int over_concurrency)
{
    if (!w->conn.connected || !worker_pubconn_connected(w) || w->out.over ||
        (!over_concurrency &&
         atomic_load_explicit(&w->shm->in_progress, memory_order_relaxed) >= (uint32_t)w->cfg->concurrency))
        return 0;
    switch (w->stop.kind) {
    case STOP_NONE: return 1;
    case STOP_RETIRE: return 1;  /* handles the share the broker queued for it, then leaves */
    default:
        /* A stop with a next worker leaves what it has not started to that
         * worker; when the whole instance stops, nobody would. */
        return atomic_load_explicit(&w->shm->stopping_for_good, memory_order_relaxed) && !w->stop.gave_up;
    }
}

/* The message is finished: handled and its publishes acknowledged. */
static void finish(worker *w, int id)
{
    shm_rec *r = worker_keep_rec(w, id);
    if (r->dlq) {
        atomic_fetch_add(&w->shm->dead_lettered, 1);
        /* The entry recorded with the message: valid in this slot whatever
         * the route table of the worker that took it. */
        if (r->stat_index >= 0 && r->stat_index < SHM_ROUTE_TABLE)
            atomic_fetch_add(&w->shm->route_stats[r->stat_index].dead_lettered, 1);
    }
    int64_t replay = w->recs[id].ok ? r->dlq_id : 0;
    memset(&w->recs[id], 0, sizeof w->recs[id]);
    worker_keep_release(w, id);
    /* After the release: a death in between replays it once more (the
     * store still has it), never drops it from the store unhandled. */
    if (replay > 0) worker_dlq_replay_done(w, replay);
}

void worker_rec_done(worker *w, int id)
{
    w->recs[id].done = 1;
    if (w->recs[id].pending == 0) finish(w, id);
}

void worker_rec_publish_done(worker *w, int id)
{
    worker_rec_local *l = &w->recs[id];
    if (l->pending > 0) l->pending--;
    if (l->done && l->pending == 0) finish(w, id);
}

/* Counts a handler run of `took` ns on route rid; `error`: an error or a
 * timeout (routemq_messages_total{result="error"}, logged), else a
 * success (result="ok") or neither (a failed attempt that is not an error:
 * ctx:retry, ctx:fail). */
static void account(worker *w, int rid, int stat, int64_t took, int error, int counted, const char *topic,
                    size_t tlen, const char *err, const char *tb)
{
    const route_info *route = rid >= 1 && rid <= w->app.nroutes ? &w->app.routes[rid - 1] : NULL;
    w->last_msg_ns = shm_now_ns();
    atomic_fetch_add_explicit(&w->shm->messages, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->shm->busy_ns, (uint64_t)took, memory_order_relaxed);
    if (stat >= 0 && counted) route_stats_observe(&w->shm->route_stats[stat], took, !error);
    if (stat >= 0 && counted) route_stats_touch(w->shm, stat);
    if (error) {
        atomic_fetch_add_explicit(&w->shm->errors, 1, memory_order_relaxed);
        char t[LOG_TOPIC_BUF];
        log_handler_error(w, route, log_topic(t, sizeof t, topic, tlen), err, tb);
    }
}

static const char *route_name(const worker *w, int rid)
{
    return rid >= 1 && rid <= w->app.nroutes ? w->app.routes[rid - 1].pattern : "?";
}

/* A failed attempt gets another one after delay seconds: the record stays
 * kept, its concurrency slot is free (the caller gave it back), and it
 * waits in the retry heap (worker_retry.c). */
static void schedule_retry(worker *w, int id, double delay, int redelivered)
{
    shm_rec *r = worker_keep_rec(w, id);
    if (delay > 86400.0 * 365) delay = 86400.0 * 365;
    r->failures++;
    r->due_ms = worker_wall_ms() + (int64_t)(delay * 1000.0 + 0.5);
    r->redelivered = (uint8_t)redelivered;
    /* Its next run is a retry, not the redelivery of an unfinished one. */
    r->started = 0;
    if (r->stat_index >= 0 && r->stat_index < SHM_ROUTE_TABLE) {
        atomic_fetch_add_explicit(&w->shm->route_stats[r->stat_index].retries, 1, memory_order_relaxed);
        route_stats_touch(w->shm, r->stat_index);
    }
    worker_retry_add(w, id);
}

void worker_handler_end(worker *w, int id, const worker_outcome *o)
{
    shm_rec *r = worker_keep_rec(w, id);
    int64_t took = shm_now_ns() - r->started_ns;
    int redelivered = w->recs[id].redelivered;
    atomic_fetch_sub_explicit(&w->shm->in_progress, 1, memory_order_relaxed);
    worker_rec_local *l = &w->recs[id];
    if (o->ok) {
        account(w, r->route_index, r->stat_index, took, 0, 1, NULL, 0, NULL, NULL);
        l->done = 1;
        l->ok = 1;
        if (l->pending == 0) finish(w, id);
        else atomic_store_explicit(&r->state, REC_ACKS, memory_order_release);
        worker_after_message(w);
        return;
    }
    const char *reason = o->reason ? o->reason : "error";
    int error = !strcmp(reason, "error") || !strcmp(reason, "timeout");
    worker_kept k;
    worker_keep_open(w, id, &k);
    char t[LOG_TOPIC_BUF];
    log_topic(t, sizeof t, k.msg.topic, k.msg.tlen);
    /* Each failed run of an error counts as today (result="error"); a
     * ctx:retry or ctx:fail is no error of the handler's. */
    account(w, r->route_index, r->stat_index, took, error, error, k.msg.topic, k.msg.tlen,
            o->err ? o->err : "(no message)", o->tb);
    if (!strcmp(reason, "failed") && errlog_allow(w))
        log_with(LOGL_WARN, &(log_fields){ .route = route_name(w, r->route_index), .topic = t, .error = o->err },
                 "the handler gave the message up (ctx:fail); it goes to the dead-letter store");
    worker_after_message(w);
    if (o->delay >= 0) {
        log_with(LOGL_DEBUG, &(log_fields){ .route = route_name(w, r->route_index), .topic = t },
                 "attempt %u failed (%s); the next one in %.3g s", r->failures + 1, reason, o->delay);
        schedule_retry(w, id, o->delay, redelivered);
        return;
    }
    /* Final: the dead-letter store takes it, and the record is finished
     * once stored and its publishes are acknowledged. A store that cannot
     * be written now keeps it waiting (worker_dlq.c logs that, rate-limited). */
    worker_dlq_put(w, id, reason, o->err, o->tb);
}

void worker_handler_done(worker *w, int id, int rc, const char *err, const char *tb)
{
    worker_outcome o = { .ok = rc == 0, .err = err, .tb = tb, .reason = "error", .delay = -1 };
    worker_handler_end(w, id, &o);
}

/* Runs the handler of record id on its kept bytes (worker_coro_call), under
 * the watchdog's clock; the record is finished by worker_handler_end. */
static void call_handler(worker *w, int id, const worker_msg *m, int rid, const topic_span *caps, int ncaps,
                         int redelivered)
{
    shm_rec *rec = worker_keep_rec(w, id);
    rec->route_index = rid;
    if (rec->stat_index < 0) rec->stat_index = stat_of(w, rid);
    rec->started = 1;
    w->recs[id].redelivered = (uint8_t)redelivered;
    rec->started_ns = shm_now_ns();
    atomic_store_explicit(&rec->state, REC_RUNNING, memory_order_release);
    atomic_fetch_add_explicit(&w->shm->in_progress, 1, memory_order_relaxed);
    atomic_store_explicit(&w->shm->handler_route, rid, memory_order_relaxed);
    atomic_store_explicit(&w->shm->handler_start_ns, rec->started_ns, memory_order_release);
    worker_coro_call(w, id, m, rid, caps, ncaps, redelivered);
    atomic_store_explicit(&w->shm->handler_start_ns, 0, memory_order_release);
    atomic_store_explicit(&w->shm->handler_rec, -1, memory_order_relaxed);
}

/* Reading stops while the keep lacks a record or room for the largest
 * message (worker_keep_has_room), and with MQTT 5 the broker is told that
 * largest size (Maximum Packet Size): a message that cannot be kept can then
 * only be one larger than that under MQTT 3.1.1, which has no way to say it.
 * libmosquitto has acknowledged it already: it is counted
 * (routemq_messages_lost_total{reason="too_large"}) and logged (at most
 * every 10 s). */
static void run_unkept(worker *w, const worker_msg *m, int rid)
{
    char t[LOG_TOPIC_BUF];
    worker_keep_count_lost(w, "too_large");
    int64_t now = shm_now_ns();
    if (now - w->unkept_logged_ns < 10000000000LL) return;
    w->unkept_logged_ns = now;
    log_error("%s (route %s): a message of %zu bytes is larger than the keep can hold (%u bytes with "
              "WORKER_MAX_KEPT_MB=%ld); it is lost: raise WORKER_MAX_KEPT_MB, or use MQTT 5 so the broker does not "
              "send it", log_topic(t, sizeof t, m->topic, m->tlen), w->app.routes[rid - 1].pattern,
              m->tlen + m->plen + m->props_len, worker_keep_max_message(w), w->cfg->max_kept_mb);
}

/* Starts the handler of kept message id (or dead-letters it). */
void worker_start_kept(worker *w, int id)
{
    shm_rec *rec = worker_keep_rec(w, id);
    worker_kept k;
    worker_keep_open(w, id, &k);
    int redelivered = rec->started || rec->earlier_run || rec->redelivered;
    /* rec->dlq: stored by a worker that died before finishing it. */
    if (rec->dlq || rec->attempts >= (uint32_t)w->cfg->poison_attempts) {
        worker_dead_letter(w, id, &k.msg);
        return;
    }
    topic_span caps[TOPIC_MAX_WILDCARDS];
    int ncaps = 0;
    int rid;
    if (w->taken_match.id_plus1 == id + 1) {
        /* Taken just now by take_message, which matched the same topic
         * against the same routes: its captures, moved to the kept bytes. */
        rid = w->taken_match.rid;
        ncaps = w->taken_match.ncaps;
        for (int i = 0; i < ncaps; i++) {
            caps[i].ptr = w->taken_match.caps[i].ptr_set ? k.msg.topic + w->taken_match.caps[i].off : NULL;
            caps[i].len = w->taken_match.caps[i].len;
        }
        w->taken_match.id_plus1 = 0;
    } else {
        rid = topic_trie_match(w->trie, k.msg.topic, k.msg.tlen, caps, TOPIC_MAX_WILDCARDS, &ncaps);
    }
    if (rid <= 0) {
        char t[LOG_TOPIC_BUF], why[LOG_TOPIC_BUF + 64];
        log_topic(t, sizeof t, k.msg.topic, k.msg.tlen);
        if (rec->failures || rec->dlq_id > 0) {
            /* A failing message is never dropped: the store keeps it. */
            snprintf(why, sizeof why, "no route matches %s any more", t);
            worker_dlq_put(w, id, rec->failures ? "error" : "failed", why, NULL);
            return;
        }
        log_warn("the kept message on %s matches no route any more; dropped", t);
        finish(w, id);
        return;
    }
    if (rec->started) {
        char t[LOG_TOPIC_BUF];
        log_warn("redelivering the message on %s a previous worker did not finish (%s)",
                 log_topic(t, sizeof t, k.msg.topic, k.msg.tlen), rec->reason[0] ? rec->reason : "no reason recorded");
    }
    call_handler(w, id, &k.msg, rid, caps, ncaps, redelivered);
}

#define PUMP_BUDGET_NS 20000000  /* then signals and timers get their turn; the loop pumps again at once */

void worker_pump(worker *w)
{
    int64_t until = shm_now_ns() + PUMP_BUDGET_NS;
    for (int i = 0; worker_can_start(w); i++) {
        if ((i & 15) == 15 && shm_now_ns() > until) return;
        int id = dequeue(w);
        if (id < 0) return;
        worker_start_kept(w, id);
    }
}

/* Whether to handle this copy of a message whose most specific route is rid.
 * With overlapping routes the broker sends one copy per matching
 * subscription, each with its subscription's identifier (MQTT 5): the copy
 * for rid is handled. Another copy, for a less specific route or with an
 * identifier no route of this application has (queued for the routes of an
 * earlier deploy), is skipped when rid's own copy comes too: this slot holds
 * rid's subscription and it delivers (worker_sub). A copy for a less
 * specific route is also skipped when rid is another slot's route (that
 * slot handles it). Otherwise its topic decides: it is handled. A copy
 * without identifier (MQTT 3.1.1) is handled. A retained message (retain
 * set: sent because a subscription was made) comes once per subscription
 * made, each copy with its own identifier: only rid's own is handled (none,
 * when rid's retained option asked for none). */
static int copy_to_handle(worker *w, const mosquitto_property *props, int rid, int retained)
{
    uint32_t id;
    int any = 0, known = 0;
    const mosquitto_property *p = props;
    for (int skip = 0; (p = mosquitto_property_read_varint(p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, &id, skip));
         skip = 1) {
        int r = app_route_by_sub_id(&w->app, id);
        if (r == rid) {
            w->conn.subs[rid - 1].delivering = 1;
            return 1;
        }
        any = 1;
        if (r > 0) known = 1;
        else if (!w->unknown_sub_id_noted) {
            w->unknown_sub_id_noted = 1;
            log_info("the broker delivers messages for subscription identifier %u, which no route of this application "
                     "has (a route removed or changed since they were queued): they are matched by their topic", id);
        }
    }
    if (!any) return 1;
    if (!app_slot_subscribes(&w->app.routes[rid - 1], w->args->slot)) return !known;
    if (retained && known) return 0;
    return !w->conn.subs[rid - 1].delivering;
}

static void take_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
                         const mosquitto_property *props)
{
    worker *w = ud;
    topic_span caps[TOPIC_MAX_WILDCARDS];
    int ncaps = 0;
    size_t tlen = strlen(msg->topic);
    uint64_t hash = msg->qos > 0 ? content_hash(msg->topic, tlen, msg->payload, (size_t)msg->payloadlen) : 0;
    int mid = msg->qos > 0 ? msg->mid : 0;
    if (seen_before(w, mid, hash)) {
        atomic_fetch_add_explicit(&w->shm->duplicates, 1, memory_order_relaxed);
        char t[LOG_TOPIC_BUF];
        log_debug("%s: the broker resent message %d, already taken by this slot; skipped",
                  log_topic(t, sizeof t, msg->topic, tlen), msg->mid);
        return;
    }
    int rid = topic_trie_match(w->trie, msg->topic, tlen, caps, TOPIC_MAX_WILDCARDS, &ncaps);
    if (rid <= 0) {
        atomic_fetch_add_explicit(&w->shm->unmatched, 1, memory_order_relaxed);
        char t[LOG_TOPIC_BUF];
        log_debug("no route matches %s", log_topic(t, sizeof t, msg->topic, tlen));
        return;
    }
    if (props && !copy_to_handle(w, props, rid, msg->retain)) {
        char t[LOG_TOPIC_BUF];
        log_debug("%s: copy for another subscription skipped (route %s gets its own)",
                  log_topic(t, sizeof t, msg->topic, tlen), w->app.routes[rid - 1].pattern);
        return;
    }
    worker_msg kept = {
        .topic = msg->topic, .tlen = tlen, .payload = msg->payload, .plen = (size_t)msg->payloadlen,
        .qos = msg->qos, .retain = msg->retain, .rid = rid,
    };
    if (props) {
        size_t n = worker_props_pack(props, w->props_buf, PROPS_MAX);
        char t[LOG_TOPIC_BUF];
        if (n == (size_t)-1)
            log_warn("%s: MQTT 5 properties larger than %d bytes are not kept", log_topic(t, sizeof t, msg->topic, tlen),
                     PROPS_MAX);
        else { kept.props = w->props_buf; kept.props_len = n; }
    }
    int id = worker_keep_add(w, &kept);
    if (id < 0) {
        run_unkept(w, &kept, rid);
        return;
    }
    worker_keep_rec(w, id)->stat_index = stat_of(w, rid);
    w->taken_match.id_plus1 = id + 1;
    w->taken_match.rid = rid;
    w->taken_match.ncaps = ncaps < TOPIC_MAX_WILDCARDS ? ncaps : TOPIC_MAX_WILDCARDS;
    for (int i = 0; i < w->taken_match.ncaps; i++) {
        w->taken_match.caps[i].ptr_set = caps[i].ptr != NULL;
        w->taken_match.caps[i].off = caps[i].ptr ? (uint32_t)(caps[i].ptr - msg->topic) : 0;
        w->taken_match.caps[i].len = (uint32_t)caps[i].len;
    }
    seen_remember(w, mid, hash);
    worker_enqueue(w, id);
    worker_pump(w);
}

void worker_on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    if (!worker_mqtt_drain_marker(ud, msg)) {
        worker_adopt_guard(ud, msg->topic);
        take_message(m, ud, msg, props);
    }
    /* libmosquitto's loop_read goes on reading packets until errno says
     * EAGAIN after one: what the handler or libmosquitto's own wake-up
     * writes left behind must not end the batch, nor read_socket's loop,
     * which stops when errno says EAGAIN after loop_read. */
    errno = 0;
}
