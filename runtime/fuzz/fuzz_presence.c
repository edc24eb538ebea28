/* Fuzz target: the presence record parser (presence_record.c) and the MAC
 * check behind it. Whatever a client publishes under routemq/presence/ must
 * be refused or read without a crash, a leak or an out-of-bounds read; what
 * is accepted has its invariants (instance and a known state, bounded lists,
 * a signed prefix inside the record). */
#include "presence_record.h"
#include "presence_sign.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    presence_record r;
    char err[256];
    if (presence_record_parse((const char *)data, size, &r, err, sizeof err)) {
        if (!err[0]) __builtin_trap();  /* a refusal always says why */
        return 0;
    }
    if (!r.instance || !r.state || r.nclients > PRESENCE_LIST_MAX || r.nshared > PRESENCE_LIST_MAX ||
        r.nroutes > PRESENCE_LIST_MAX || r.signed_len >= size || r.nmacs > PRESENCE_MACS_MAX || (r.nmacs && !r.signed_len))
        __builtin_trap();
    for (int i = 0; i < r.nclients; i++)
        if (strlen(r.clients[i]) > PRESENCE_STR_MAX) __builtin_trap();
    presence_key k;
    presence_key_init(&k, "fuzzing-key-0123456789", 22);
    const char *why = NULL;
    if (presence_verify(&k, 1, (const char *)data, &r, &why) && r.signed_len == 0) __builtin_trap();
    presence_record_free(&r);
    return 0;
}
