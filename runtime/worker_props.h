/* MQTT 5 properties of the message in flight, packed into its shared-memory
 * record so that a redelivered request can still be answered (response
 * topic, correlation data, user properties). */
#ifndef ROUTEMQ_WORKER_PROPS_H
#define ROUTEMQ_WORKER_PROPS_H

#include <mosquitto.h>
#include <stddef.h>

/* Packs the properties a handler can see into out; returns the bytes used,
 * or (size_t)-1 when they do not fit in cap. */
size_t worker_props_pack(const mosquitto_property *props, char *out, size_t cap);
/* Iterates packed properties: returns 1 and the next entry (its MQTT
 * property id, value a/alen, and for a user property the value b/blen after
 * the name in a/alen), 0 at the end or on malformed bytes. */
int worker_props_next(const char **at, const char *end, int *id, const char **a, size_t *alen,
                      const char **b, size_t *blen);

#endif
