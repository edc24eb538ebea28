/* Pass one of ctx:json(): checks that a payload is one JSON text (RFC 8259) and counts
 * the elements of each array and object, so that pass two (json_decode.c) builds every
 * Lua table at its final size. Pure: no Lua, no allocation, no globals. Also the \u
 * escape and UTF-8 pieces both passes and the presence record parser share. */
#ifndef ROUTEMQ_JSON_SCAN_H
#define ROUTEMQ_JSON_SCAN_H

#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 1000 /* nested arrays and objects, as lua-cjson's default */

/* Checks buf[0..len) (buf[len] readable and '\0', as in every Lua string) is exactly one JSON value, optionally surrounded by whitespace:
 * strings well-formed UTF-8 without raw control characters, escapes valid (surrogates
 * paired), numbers in JSON's grammar (no NaN, Infinity, hex or leading zeros), at most
 * JSON_MAX_DEPTH levels. 0 and *ncont = the number of arrays and objects, with
 * counts[i] = the element count of the i-th one in the order of their opening brackets
 * (only the first cap are stored: call again with more room when *ncont > cap); or -1
 * with "<problem> at character <n>" in err (n counts bytes from 1). */
int json_scan(const char *buf, size_t len, uint32_t *counts, size_t cap, size_t *ncont,
              char *err, size_t errlen);

/* The code unit of the four hex digits at p (either case), or -1; stops at the first
 * byte that is not one, so a '\0' before them ends the read. */
long json_hex4(const char *p);

/* Writes code point cp (at most U+10FFFF) as UTF-8 to out (room for 4 bytes); its length. */
size_t json_utf8_put(char *out, uint32_t cp);

#endif
