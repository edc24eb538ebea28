/* The message a previous worker of this slot died on: handled again first
 * (ctx.redelivered = true), or, after ROUTEMQ_POISON_ATTEMPTS deaths,
 * published to the dead-letter topic as a JSON envelope. */
#include "worker_internal.h"
#include "log.h"
#include "luavm.h"

#include <stdlib.h>
#include <string.h>

/* ROUTEMQ_DLQ_TOPIC with {topic} replaced by the original topic. */
static void dlq_topic(worker *w, const char *topic, char *out, size_t n)
{
    const char *tpl = w->cfg->dlq_topic ? w->cfg->dlq_topic : "routemq/dlq/{topic}";
    const char *at = strstr(tpl, "{topic}");
    if (at) snprintf(out, n, "%.*s%s%s", (int)(at - tpl), tpl, topic, at + 7);
    else snprintf(out, n, "%s", tpl);
}

static void dead_letter(worker *w, const char *topic, const char *payload, size_t plen)
{
    shm_inflight *in = &w->shm->inflight;
    lua_State *L = w->L;
    int ri = in->route_index;
    const char *route = ri >= 1 && ri <= w->app.nroutes ? w->app.routes[ri - 1].pattern : "";
    char err[1024], dtopic[2048];
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->envelope_ref);
    lua_pushstring(L, topic);
    lua_pushlstring(L, payload, plen);
    lua_pushstring(L, route);
    lua_pushstring(L, in->reason);
    lua_pushinteger(L, in->attempts);
    if (luavm_pcall(L, 5, 1, err, sizeof err, NULL, 0)) {
        log_error("cannot build the dead-letter message: %s", err);
        return;
    }
    size_t elen;
    const char *env = lua_tolstring(L, -1, &elen);
    dlq_topic(w, topic, dtopic, sizeof dtopic);
    int rc = mosquitto_publish_v5(w->mosq, NULL, dtopic, (int)elen, env, 1, 0, NULL);
    lua_pop(L, 1);
    atomic_fetch_add(&w->shm->dead_lettered, 1);
    /* The entry recorded with the message: valid in this slot whatever the
     * route table of the worker that took it. */
    if (in->stat_index >= 0 && in->stat_index < SHM_ROUTE_STATS)
        atomic_fetch_add(&w->shm->route_stats[in->stat_index].dead_lettered, 1);
    log_with(LOGL_ERROR, &(log_fields){ .route = route, .topic = topic, .error = in->reason },
             "message dead-lettered to %s after %u failed attempts%s", dtopic, in->attempts,
             rc == MOSQ_ERR_SUCCESS ? "" : " (publish failed)");
}

void worker_replay_inflight(worker *w)
{
    shm_inflight *in = &w->shm->inflight;
    if (!atomic_load_explicit(&in->active, memory_order_acquire)) return;
    char *topic = strndup(in->data, in->complete ? in->topic_len : 0);
    const char *payload = in->data + in->topic_len;
    if (!topic) return;
    if (!in->complete) {
        log_error("a message of %u bytes was in a handler when the worker died; too large to keep, it is lost",
                  in->topic_len + in->payload_len);
    } else if (in->attempts >= (uint32_t)w->cfg->poison_attempts) {
        dead_letter(w, topic, payload, in->payload_len);
    } else {
        topic_span caps[TOPIC_MAX_WILDCARDS];
        int ncaps = 0;
        int rid = topic_trie_match(w->trie, topic, in->topic_len, caps, TOPIC_MAX_WILDCARDS, &ncaps);
        if (rid > 0) {
            log_warn("redelivering the message on %s a previous worker died on (%s)", topic, in->reason);
            worker_dispatch(w, rid, topic, in->topic_len, payload, in->payload_len, in->qos, in->retain, NULL, caps,
                            ncaps, 1, 0, 0);
        } else {
            log_warn("the message on %s a previous worker died on matches no route any more; dropped", topic);
        }
    }
    atomic_store_explicit(&in->active, 0, memory_order_release);
    free(topic);
}
