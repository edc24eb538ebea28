/* Packing is a list of entries: [id:1][len:2][bytes], and for a user
 * property [id:1][name len:2][name][value len:2][value]. Lengths fit 16 bits:
 * MQTT limits these strings to 65535 bytes. */
#include "worker_props.h"

#include <mqtt_protocol.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct { char *p; size_t len, cap; int full; } packer;

static void put(packer *k, const void *b, size_t n)
{
    if (k->full || k->len + n > k->cap) { k->full = 1; return; }
    memcpy(k->p + k->len, b, n);
    k->len += n;
}

static void put_bytes(packer *k, const void *b, size_t n)
{
    uint8_t l[2] = { (uint8_t)(n >> 8), (uint8_t)n };
    put(k, l, 2);
    put(k, b, n);
}

size_t worker_props_pack(const mosquitto_property *props, char *out, size_t cap)
{
    packer k = { out, 0, cap, 0 };
    for (const mosquitto_property *p = props; p; p = mosquitto_property_next(p)) {
        int id = mosquitto_property_identifier(p);
        uint8_t idb = (uint8_t)id;
        char *s = NULL, *v = NULL;
        void *bin = NULL;
        uint16_t blen = 0;
        uint32_t u32;
        switch (id) {
        case MQTT_PROP_CONTENT_TYPE:
        case MQTT_PROP_RESPONSE_TOPIC:
            if (mosquitto_property_read_string(p, id, &s, false)) { put(&k, &idb, 1); put_bytes(&k, s, strlen(s)); }
            break;
        case MQTT_PROP_CORRELATION_DATA:
            if (mosquitto_property_read_binary(p, id, &bin, &blen, false)) { put(&k, &idb, 1); put_bytes(&k, bin, blen); }
            break;
        case MQTT_PROP_MESSAGE_EXPIRY_INTERVAL:
            if (mosquitto_property_read_int32(p, id, &u32, false)) { put(&k, &idb, 1); put_bytes(&k, &u32, 4); }
            break;
        case MQTT_PROP_USER_PROPERTY:
            if (mosquitto_property_read_string_pair(p, id, &s, &v, false)) {
                put(&k, &idb, 1);
                put_bytes(&k, s, strlen(s));
                put_bytes(&k, v, strlen(v));
            }
            break;
        default:
            break;
        }
        free(s);
        free(v);
        free(bin);
    }
    return k.full ? (size_t)-1 : k.len;
}

/* Reads one length-prefixed field; NULL past the end. */
static const char *get_bytes(const char **at, const char *end, size_t *n)
{
    if (end - *at < 2) return NULL;
    *n = ((size_t)(uint8_t)(*at)[0] << 8) | (uint8_t)(*at)[1];
    const char *b = *at + 2;
    if ((size_t)(end - b) < *n) return NULL;
    *at = b + *n;
    return b;
}

int worker_props_next(const char **at, const char *end, int *id, const char **a, size_t *alen,
                      const char **b, size_t *blen)
{
    const char *p = *at;
    if (p >= end) return 0;
    *id = (uint8_t)*p++;
    if (!(*a = get_bytes(&p, end, alen))) return 0;
    *b = NULL;
    *blen = 0;
    if (*id == MQTT_PROP_USER_PROPERTY && !(*b = get_bytes(&p, end, blen))) return 0;
    *at = p;
    return 1;
}
