/* What handlers publish, until the broker has it: every publish is tracked by
 * packet id with the message it belongs to, so that message is finished only
 * when the broker has acknowledged its QoS >= 1 publishes (QoS 0: written),
 * and the backlog is bounded by WORKER_MAX_OUTGOING (count) and
 * WORKER_MAX_OUTGOING_MB (bytes). Nothing is given up on without a log line
 * and routemq_publishes_dropped_total. */
#include "worker_internal.h"
#include "log.h"

#include <errno.h>
#include <mqtt_protocol.h>
#include <stdlib.h>
#include <string.h>

#define MIDS 65536

int worker_out_setup(worker *w)
{
    w->out.by_mid = calloc(MIDS, sizeof *w->out.by_mid);
    if (!w->out.by_mid) { log_error("out of memory"); return -1; }
    w->out.max_count = (uint32_t)w->cfg->max_outgoing;
    w->out.max_bytes = (uint64_t)w->cfg->max_outgoing_mb * 1024 * 1024;
    return 0;
}

void worker_out_free(worker *w)
{
    free(w->out.by_mid);
    w->out.by_mid = NULL;
}

static void update_over(worker *w)
{
    worker_out *o = &w->out;
    if (o->count >= o->max_count || o->bytes >= o->max_bytes) o->over = 1;
    else if (o->over && o->count <= o->max_count / 2 && o->bytes <= o->max_bytes / 2) o->over = 0;
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
    int rc = mosquitto_publish_v5(worker_pubconn_mosq(w), &mid, topic, (int)plen, payload, qos, retain, props);
    if (rc != MOSQ_ERR_SUCCESS) {
        *err = rc == MOSQ_ERR_NO_CONN ? "not connected to the broker (QoS 0 publishes are not queued)"
                                      : mosquitto_strerror(rc);
        return -1;
    }
    w->conn.published = 1;
    worker_out_entry *e = &w->out.by_mid[(uint16_t)mid];
    if (e->used) {
        /* 65535 publishes outstanding: the bound is far below, so this is a
         * packet id reused by libmosquitto for one it already settled. */
        settle(w, mid);
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
