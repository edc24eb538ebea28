/* Fuzz target: the control socket's request parser. What it echoes back is
 * printable ASCII and short; a scale it accepts is in range. */
#include "master_request.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    master_request r;
    master_request_parse((const char *)data, size, &r);
    size_t n = strnlen(r.shown, sizeof r.shown);
    if (n == sizeof r.shown) abort();
    for (size_t i = 0; i < n; i++)
        if (r.shown[i] < 0x20 || r.shown[i] >= 0x7f) abort();
    if (r.kind == REQ_SCALE && (r.scale < 1 || r.scale > 1024)) abort();
    if (r.kind != REQ_SCALE && r.scale != 0) abort();
    return 0;
}
