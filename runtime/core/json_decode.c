/* Pass two of ctx:json() (json_decode.h): builds Lua values from a text json_scan has
 * checked, so nothing here re-checks the grammar; every table is created at the size
 * the scan counted, which saves lua-cjson's rehashing as tables grow from empty. */
#include "json_decode.h"
#include "json_scan.h"

#include <lauxlib.h>

#include <locale.h>
#include <stdint.h>
#include <stdlib.h>

#define SMALL_COUNTS 64 /* containers whose counts fit on the C stack */

typedef struct {
    lua_State *L;
    const char *p;          /* the cursor, in a checked text that ends with '\0' */
    const uint32_t *counts; /* element counts, in the order of the opening brackets */
    size_t next;            /* the next container's index in counts */
} builder;

static void push_value(builder *b);

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

static void add_utf8(luaL_Buffer *lb, uint32_t cp)
{
    char u[4];
    luaL_addlstring(lb, u, json_utf8_put(u, cp));
}

/* The escape at p (a backslash) into lb; returns what follows it. */
static const char *add_escape(luaL_Buffer *lb, const char *p)
{
    char e = p[1];
    switch (e) {
    case 'b': luaL_addchar(lb, '\b'); return p + 2;
    case 'f': luaL_addchar(lb, '\f'); return p + 2;
    case 'n': luaL_addchar(lb, '\n'); return p + 2;
    case 'r': luaL_addchar(lb, '\r'); return p + 2;
    case 't': luaL_addchar(lb, '\t'); return p + 2;
    case 'u': break;
    default: luaL_addchar(lb, e); return p + 2; /* " \ / */
    }
    uint32_t cp = (uint32_t)json_hex4(p + 2); /* checked by the scan */
    if (cp >= 0xD800 && cp <= 0xDBFF) { /* the scan saw its low half follow */
        cp = 0x10000 + ((cp - 0xD800) << 10) + ((uint32_t)json_hex4(p + 8) - 0xDC00);
        add_utf8(lb, cp);
        return p + 12;
    }
    add_utf8(lb, cp);
    return p + 6;
}

/* The string at b->p (its opening quote). Most have no escape and are pushed in place. */
static void push_string(builder *b)
{
    const char *start = b->p + 1, *q = start;
    while (*q != '"' && *q != '\\') q++;
    if (*q == '"') {
        lua_pushlstring(b->L, start, (size_t)(q - start));
        b->p = q + 1;
        return;
    }
    luaL_Buffer lb;
    luaL_buffinit(b->L, &lb);
    for (;;) {
        luaL_addlstring(&lb, start, (size_t)(q - start));
        if (*q == '"') break;
        start = q = add_escape(&lb, q);
        while (*q != '"' && *q != '\\') q++;
    }
    luaL_pushresult(&lb);
    b->p = q + 1;
}

/* strtod in the C locale whatever the application set with os.setlocale, made once. */
static double strtod_c(const char *s)
{
    static locale_t c_numeric;
    if (c_numeric == (locale_t)0) c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (c_numeric == (locale_t)0) return strtod(s, NULL);
    return strtod_l(s, NULL, c_numeric);
}

/* Exact powers of ten: a double holds 10^0 .. 10^22 without rounding. */
static const double pow10_exact[] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* The number at b->p. With at most 2^53 as its digits and a power of ten up to 22 either
 * way, one multiplication or division of two exact doubles gives the correctly rounded
 * value (Clinger's fast path); anything else goes to strtod. */
static void push_number(builder *b)
{
    const char *start = b->p, *p = start;
    int neg = *p == '-';
    p += neg;
    uint64_t m = 0;
    int digits = 0, exp10 = 0, slow = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (digits < 19) {
            m = m * 10 + (uint64_t)(*p - '0');
            digits += m != 0;
        } else {
            slow = 1;
        }
    }
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++) {
            if (digits < 19) {
                m = m * 10 + (uint64_t)(*p - '0');
                digits += m != 0;
                exp10--;
            } else {
                slow = 1;
            }
        }
    }
    if ((*p | 0x20) == 'e') {
        p++;
        int eneg = *p == '-';
        p += *p == '-' || *p == '+';
        int e = 0;
        for (; *p >= '0' && *p <= '9'; p++)
            if (e < 100000) e = e * 10 + (*p - '0');
        exp10 += eneg ? -e : e;
    }
    b->p = p;
    double d;
    if (m == 0 && !slow) {
        d = 0.0;
    } else if (!slow && m <= (UINT64_C(1) << 53) && exp10 >= -22 && exp10 <= 22) {
        d = (double)m;
        d = exp10 < 0 ? d / pow10_exact[-exp10] : d * pow10_exact[exp10];
    } else {
        lua_pushnumber(b->L, strtod_c(start));
        return;
    }
    lua_pushnumber(b->L, neg ? -d : d);
}

static void push_object(builder *b)
{
    uint32_t n = b->counts[b->next++];
    lua_State *L = b->L;
    luaL_checkstack(L, 3, "JSON nested too deeply");
    lua_createtable(L, 0, (int)n);
    b->p++;
    for (uint32_t i = 0; i < n; i++) {
        b->p = skip_ws(b->p);
        push_string(b);
        b->p = skip_ws(b->p) + 1; /* the colon */
        push_value(b);
        lua_rawset(L, -3);
        b->p = skip_ws(b->p) + 1; /* the comma, or the closing brace */
    }
    if (n == 0) b->p = skip_ws(b->p) + 1;
}

static void push_array(builder *b)
{
    uint32_t n = b->counts[b->next++];
    lua_State *L = b->L;
    luaL_checkstack(L, 2, "JSON nested too deeply");
    lua_createtable(L, (int)n, 0);
    b->p++;
    for (uint32_t i = 0; i < n; i++) {
        push_value(b);
        lua_rawseti(L, -2, (int)i + 1);
        b->p = skip_ws(b->p) + 1;
    }
    if (n == 0) b->p = skip_ws(b->p) + 1;
}

static void push_value(builder *b)
{
    b->p = skip_ws(b->p);
    switch (*b->p) {
    case '{': push_object(b); return;
    case '[': push_array(b); return;
    case '"': push_string(b); return;
    case 't': lua_pushboolean(b->L, 1); b->p += 4; return;
    case 'f': lua_pushboolean(b->L, 0); b->p += 5; return;
    case 'n': lua_pushlightuserdata(b->L, NULL); b->p += 4; return;
    default: push_number(b); return;
    }
}

int json_decode_push(lua_State *L, const char *s, size_t len, char *err, size_t errlen)
{
    uint32_t small[SMALL_COUNTS];
    size_t n;
    if (json_scan(s, len, small, SMALL_COUNTS, &n, err, errlen) != 0) return -1;
    builder b = { L, s, small, 0 };
    if (n > SMALL_COUNTS) {
        /* Owned by Lua, so an out-of-memory error below leaks nothing. */
        uint32_t *counts = lua_newuserdata(L, n * sizeof *counts);
        json_scan(s, len, counts, n, &n, err, errlen);
        b.counts = counts;
        push_value(&b);
        lua_remove(L, -2);
        return 0;
    }
    push_value(&b);
    return 0;
}
