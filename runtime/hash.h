/* FNV-1a, 64 bits: a fast hash for short keys where nothing adversarial is
 * at stake (duplicate detection of deliveries, fingerprints of subscription
 * sets). Fold bytes with hash_fnv1a, whole words with hash_fnv1a_word. */
#ifndef ROUTEMQ_HASH_H
#define ROUTEMQ_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_FNV1A_INIT  14695981039346656037ULL  /* the offset basis (0xcbf29ce484222325) */
#define HASH_FNV1A_PRIME 1099511628211ULL

/* h extended with the n bytes at p. */
static inline uint64_t hash_fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * HASH_FNV1A_PRIME;
    return h;
}

/* h extended with a whole value in one step (a length, a number). */
static inline uint64_t hash_fnv1a_word(uint64_t h, uint64_t v)
{
    return (h ^ v) * HASH_FNV1A_PRIME;
}

#endif
