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
/* Rebuilds a property list from packed bytes; NULL when there are none (or
 * memory ran out: the message is then replayed without them). */
mosquitto_property *worker_props_unpack(const char *in, size_t len);

#endif
