/* What handlers publish, until the broker has it: every publish is tracked by
 * packet id with the message it belongs to, so that message is finished only
 * when the broker has acknowledged its QoS >= 1 publishes (QoS 0: written),
 * and the backlog is bounded by WORKER_MAX_OUTGOING (count) and
 * WORKER_MAX_OUTGOING_MB (bytes): above it, publishes from code that can wait
 * wait (routemq.worker's io.wait_outgoing polls wake_fd, readable while below
 * the bound). Nothing is given up on without a log line and
 * routemq_publishes_dropped_total. */
#include "worker_internal.h"
#include "log.h"

#include <errno.h>
#include <mqtt_protocol.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MIDS 65536

int worker_out_setup(worker *w)
{
    w->out.wake_fd = -1;
    w->out.by_mid = calloc(MIDS, sizeof *w->out.by_mid);
    if (!w->out.by_mid) { log_error("out of memory"); return -1; }
    w->out.max_count = (uint32_t)w->cfg->max_outgoing;
    if (w->out.max_count > WORKER_OUT_MID_LIMIT) w->out.max_count = WORKER_OUT_MID_LIMIT;
    w->out.max_bytes = (uint64_t)w->cfg->max_outgoing_mb * 1024 * 1024;
    w->out.wake_fd = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);  /* readable: below the bound */
    if (w->out.wake_fd < 0) { log_error("eventfd: %s", strerror(errno)); return -1; }
    return 0;
}

void worker_out_free(worker *w)
{
    /* by_mid is set only once setup has run, and wake_fd (0 before) with it. */
    if (w->out.by_mid && w->out.wake_fd >= 0) close(w->out.wake_fd);
    w->out.wake_fd = -1;
    free(w->out.by_mid);
    w->out.by_mid = NULL;
}

/* wake_fd is readable exactly while below the bound, so a publisher that
 * starts polling it after the bound was left is not forgotten. */
static void set_wake(worker_out *o, int below)
{
    uint64_t v = 1;
    ssize_t n = below ? write(o->wake_fd, &v, sizeof v) : read(o->wake_fd, &v, sizeof v);
    (void)n;  /* EAGAIN: already in that state */
}

static void update_over(worker *w)
{
    worker_out *o = &w->out;
    int was = o->over;
    if (o->count >= o->max_count || o->bytes >= o->max_bytes) o->over = 1;
    else if (o->over && o->count <= o->max_count / 2 && o->bytes <= o->max_bytes / 2) o->over = 0;
    if (o->over != was && o->wake_fd >= 0) set_wake(o, !o->over);
    atomic_store_explicit(&w->shm->outgoing, o->count, memory_order_relaxed);
    atomic_store_explicit(&w->shm->outgoing_bytes, o->bytes, memory_order_relaxed);
}

/* The publish with packet id mid is settled: forget it and tell its message. */
static void settle(worker *w, int mid)
{
    worker_out_entry *e = &w->out.by_mid[(uint16_t)mid];
    if (!e->used) return;
    int rec = e->rec;
    w->out.count--;
    w->out.bytes -= e->bytes;
    memset(e, 0, sizeof *e);
    update_over(w);
    if (rec >= 0) worker_rec_publish_done(w, rec);
}

static void count_dropped(worker *w, uint32_t n)
{
    atomic_fetch_add_explicit(&w->shm->publishes_dropped, n, memory_order_relaxed);
}

int worker_out_publish(worker *w, int rec, const char *topic, const void *payload, size_t plen, int qos,
                       int retain, const mosquitto_property *props, const char **err)
{
    int mid = 0;
    if (plen > (size_t)MQTT_MAX_PAYLOAD) { *err = "payload larger than MQTT allows (268435455 bytes)"; return -1; }
    if (w->out.count >= WORKER_OUT_MID_LIMIT) {
        /* Only code that cannot wait gets here (the bound is below): one
         * more would reuse the packet id of a publish still outstanding. */
        *err = "60000 publishes await the broker's acknowledgement and this code cannot wait for them "
               "(a C function between it and its coroutine)";
        return -1;
    }
    int rc = mosquitto_publish_v5(worker_pubconn_mosq(w), &mid, topic, (int)plen, payload, qos, retain, props);
    /* Disconnected, libmosquitto still queues a QoS 1/2 publish (it has a
     * packet id) and sends it after the reconnect: it is tracked like any. */
    if (rc == MOSQ_ERR_NO_CONN && qos > 0 && mid > 0) rc = MOSQ_ERR_SUCCESS;
    if (rc != MOSQ_ERR_SUCCESS) {
        *err = rc == MOSQ_ERR_NO_CONN ? "not connected to the broker (QoS 0 publishes are not queued)"
                                      : mosquitto_strerror(rc);
        return -1;
    }
    w->conn.published = 1;
    worker_out_entry *e = &w->out.by_mid[(uint16_t)mid];
    if (e->used) {
        /* Cannot happen: fewer than WORKER_OUT_MID_LIMIT publishes are ever
         * outstanding and the broker acknowledges them in order. Were an id
         * reused anyway, the older publish's message must not finish before
         * its PUBACK: it stays kept, for the slot's next worker. */
        log_error("packet id %d reused while its publish awaits the broker; its message stays kept", mid);
        w->out.count--;
        w->out.bytes -= e->bytes;
    }
    e->used = 1;
    e->rec = rec;
    e->qos = (uint8_t)qos;
    e->bytes = (uint32_t)(strlen(topic) + plen);
    w->out.count++;
    w->out.bytes += e->bytes;
    update_over(w);
    if (rec >= 0) w->recs[rec].pending++;
    return 0;
}

void worker_out_on_publish(struct mosquitto *m, void *ud, int mid, int reason, const mosquitto_property *props)
{
    worker *w = ud;
    worker_out_entry *e = &w->out.by_mid[(uint16_t)mid];
    if (e->used && reason >= 0x80) {
        count_dropped(w, 1);
        log_error("the broker refused a publish (reason %d: %s); it is dropped", reason, mosquitto_reason_string(reason));
    }
    settle(w, mid);
    errno = 0;  /* see worker_on_message */
}

void worker_out_connection_lost(worker *w)
{
    /* libmosquitto keeps QoS >= 1 publishes and sends them again after the
     * reconnect; QoS 0 packets not yet written are dropped with the socket. */
    uint32_t lost = 0;
    for (int mid = 0; mid < MIDS && w->out.count; mid++) {
        worker_out_entry *e = &w->out.by_mid[mid];
        if (!e->used || e->qos != 0) continue;
        lost++;
        settle(w, mid);
    }
    if (lost) {
        count_dropped(w, lost);
        log_warn("%u QoS 0 publishes were not written before the connection was lost; they are dropped", lost);
    }
}

uint32_t worker_out_abandon(worker *w)
{
    uint32_t n = 0;
    for (int mid = 0; mid < MIDS && w->out.count; mid++) {
        worker_out_entry *e = &w->out.by_mid[mid];
        if (!e->used) continue;
        n++;
        /* Forget it without finishing its message: it stays kept. */
        w->out.count--;
        w->out.bytes -= e->bytes;
        memset(e, 0, sizeof *e);
    }
    update_over(w);
    return n;
}
