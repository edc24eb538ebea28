/* The MAC of presence records (docs/deployment.md, "The group trusts only itself"):
 * HMAC-SHA256 with the cluster key, named by a key id so that a group can
 * move to a new key while the old one is still accepted. */
#ifndef ROUTEMQ_PRESENCE_SIGN_H
#define ROUTEMQ_PRESENCE_SIGN_H

#include <stddef.h>
#include "presence_record.h"

#define PRESENCE_KEY_MIN 16     /* bytes of a cluster key */
#define PRESENCE_SIG_LEN (PRESENCE_KID_LEN + 1 + PRESENCE_MAC_LEN)  /* "<kid>:<mac>" */
#define PRESENCE_SIGS_LEN (PRESENCE_MACS_MAX * (PRESENCE_SIG_LEN + 1))  /* room for all, comma-separated */

typedef struct presence_key {
    const char *secret;         /* not owned (the configuration's) */
    size_t len;
    char kid[PRESENCE_KID_LEN + 1];
} presence_key;

/* Derives the key id of secret (the first 8 hex digits of an HMAC of a fixed
 * label: it names the key without revealing it). */
void presence_key_init(presence_key *k, const char *secret, size_t len);
/* "<kid>:<hex HMAC-SHA256 of data[0..len)>" into out (PRESENCE_SIG_LEN + 1 bytes). */
void presence_sign(const presence_key *k, const char *data, size_t len, char *out);
/* The value of a record's "mac": one "<kid>:<hex>" per key of keys[0..n),
 * comma-separated, into out (PRESENCE_SIGS_LEN bytes). */
void presence_sign_all(const presence_key *keys, int n, const char *data, size_t len, char *out);
/* 1 when the record parsed from buf carries a MAC, by one of keys[0..n), that
 * covers exactly its first r->signed_len bytes; 0 else, the reason in why
 * ("unsigned", "unknown key id", "wrong MAC"). Constant-time compare. */
int presence_verify(const presence_key *keys, int n, const char *buf, const presence_record *r, const char **why);

#endif
