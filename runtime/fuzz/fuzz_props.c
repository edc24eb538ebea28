/* Fuzz target: packing a message's MQTT 5 properties into its in-flight
 * record. The input is a list of properties to build; pack -> iterate must
 * give back exactly the properties a handler can see, in order, and a buffer
 * that is too small must be reported, never overrun. */
#include "worker_props.h"

#include <mqtt_protocol.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAXP 64

typedef struct { int id; const char *a; size_t alen; const char *b; size_t blen; uint32_t u32; } expect;

/* Next field: one length byte then that many bytes (cut at the end of input). */
static const uint8_t *take(const uint8_t **at, const uint8_t *end, size_t *n)
{
    if (*at >= end) { *n = 0; return *at; }
    size_t want = **at;
    (*at)++;
    if (want == 255 && end - *at >= 2) { want = ((size_t)(*at)[0] << 8 | (*at)[1]) * 4; *at += 2; }
    if ((size_t)(end - *at) < want) want = (size_t)(end - *at);
    const uint8_t *p = *at;
    *at += want;
    *n = want;
    return p;
}

static char *cstr(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s) abort();
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *at = data, *end = data + size;
    mosquitto_property *props = NULL;
    expect want[2 * MAXP];
    char *owned[2 * MAXP];
    int nwant = 0, nowned = 0;
    if (size < 2) return 0;
    size_t cap = ((size_t)data[0] << 8 | data[1]) * 8;
    at += 2;
    while (at < end && nowned + 2 <= 2 * MAXP) {
        int kind = *at++ % 6;
        size_t alen, blen;
        const uint8_t *a = take(&at, end, &alen);
        const uint8_t *b = kind == 4 ? take(&at, end, &blen) : NULL;
        char *as = cstr(a, alen), *bs = b ? cstr(b, blen) : NULL;
        owned[nowned++] = as;
        if (bs) owned[nowned++] = bs;
        expect e = { 0 };
        int rc;
        switch (kind) {
        case 0:
        case 1:
            e.id = kind == 0 ? MQTT_PROP_CONTENT_TYPE : MQTT_PROP_RESPONSE_TOPIC;
            rc = mosquitto_property_add_string(&props, e.id, as);
            e.a = as, e.alen = strlen(as);
            break;
        case 2:
            e.id = MQTT_PROP_CORRELATION_DATA;
            if (alen > UINT16_MAX) alen = UINT16_MAX;  /* the most MQTT can carry */
            rc = mosquitto_property_add_binary(&props, e.id, a, (uint16_t)alen);
            e.a = as, e.alen = alen;
            break;
        case 3:
            e.id = MQTT_PROP_MESSAGE_EXPIRY_INTERVAL;
            e.u32 = 0;
            memcpy(&e.u32, as, alen < 4 ? alen : 4);
            rc = mosquitto_property_add_int32(&props, e.id, e.u32);
            break;
        case 4:
            e.id = MQTT_PROP_USER_PROPERTY;
            rc = mosquitto_property_add_string_pair(&props, e.id, as, bs);
            e.a = as, e.alen = strlen(as), e.b = bs, e.blen = strlen(bs);
            break;
        default:  /* a property the handler does not see: packing skips it */
            rc = mosquitto_property_add_byte(&props, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, alen ? a[0] & 1 : 0);
            e.id = 0;
            break;
        }
        if (rc == MOSQ_ERR_SUCCESS && e.id) want[nwant++] = e;
    }

    size_t need = 0;
    for (int i = 0; i < nwant; i++)
        need += 1 + 2 + (want[i].id == MQTT_PROP_MESSAGE_EXPIRY_INTERVAL ? 4 : want[i].alen) +
                (want[i].id == MQTT_PROP_USER_PROPERTY ? 2 + want[i].blen : 0);
    char *buf = malloc(cap ? cap : 1);
    if (!buf) abort();
    size_t got = worker_props_pack(props, buf, cap);
    if (need > cap) {
        if (got != (size_t)-1) abort();
    } else {
        if (got != need) abort();
        const char *p = buf, *pend = buf + got, *va, *vb;
        size_t la, lb;
        int id, i = 0;
        while (worker_props_next(&p, pend, &id, &va, &la, &vb, &lb)) {
            if (i >= nwant || id != want[i].id) abort();
            if (id == MQTT_PROP_MESSAGE_EXPIRY_INTERVAL) {
                if (la != 4 || memcmp(va, &want[i].u32, 4)) abort();
            } else if (la != want[i].alen || memcmp(va, want[i].a, la)) {
                abort();
            }
            if (id == MQTT_PROP_USER_PROPERTY && (lb != want[i].blen || memcmp(vb, want[i].b, lb))) abort();
            if (id != MQTT_PROP_USER_PROPERTY && vb != NULL) abort();
            i++;
        }
        if (i != nwant || p != pend) abort();
    }
    /* Iterating arbitrary bytes (a torn record) stays inside them. */
    {
        const char *p = (const char *)data, *pend = (const char *)end, *va, *vb;
        size_t la, lb;
        int id;
        while (worker_props_next(&p, pend, &id, &va, &la, &vb, &lb))
            if (va + la > pend || (vb && vb + lb > pend)) abort();
    }
    free(buf);
    mosquitto_property_free_all(&props);
    for (int i = 0; i < nowned; i++) free(owned[i]);
    return 0;
}
