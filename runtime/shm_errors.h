/* The latest handler errors of a slot in its shared memory (shm_slot.recent_errors):
 * the worker records each one; the master copies them for /errors without
 * touching MQTT or waiting for the worker. */
#ifndef ROUTEMQ_SHM_ERRORS_H
#define ROUTEMQ_SHM_ERRORS_H

#include "shm.h"

/* Worker side: records one handler error (texts truncated to fit). */
void shm_errors_record(shm_slot *sh, const char *route, const char *topic, const char *message, const char *traceback);

/* Master side: copies error number n (0-based, below count) of the slot;
 * 0 ok, -1 when it was overwritten or is being written. */
int shm_errors_read(const shm_slot *sh, uint64_t n, shm_error *out);

#endif
