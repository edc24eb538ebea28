/* HMAC-SHA256 of presence records, with OpenSSL's libcrypto (linked already
 * for TLS). The key stays in the configuration; nothing here logs it. */
#include "presence_sign.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = 0;
}

static void hmac_hex(const char *key, size_t klen, const char *data, size_t len, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)data, len, md, &mdlen) || mdlen != 32) {
        memset(out, '0', PRESENCE_MAC_LEN);  /* never matches a real MAC of ours: verify refuses */
        out[PRESENCE_MAC_LEN] = 0;
        return;
    }
    to_hex(md, 32, out);
}

void presence_key_init(presence_key *k, const char *secret, size_t len)
{
    static const char label[] = "routemq presence key id";
    char hex[PRESENCE_MAC_LEN + 1];
    k->secret = secret;
    k->len = len;
    hmac_hex(secret, len, label, sizeof label - 1, hex);
    memcpy(k->kid, hex, PRESENCE_KID_LEN);
    k->kid[PRESENCE_KID_LEN] = 0;
}

void presence_sign(const presence_key *k, const char *data, size_t len, char *out)
{
    memcpy(out, k->kid, PRESENCE_KID_LEN);
    out[PRESENCE_KID_LEN] = ':';
    hmac_hex(k->secret, k->len, data, len, out + PRESENCE_KID_LEN + 1);
}

void presence_sign_all(const presence_key *keys, int n, const char *data, size_t len, char *out)
{
    size_t at = 0;
    for (int i = 0; i < n && i < PRESENCE_MACS_MAX; i++) {
        if (i) out[at++] = ',';
        presence_sign(&keys[i], data, len, out + at);
        at += PRESENCE_SIG_LEN;
    }
    out[at] = 0;
}

int presence_verify(const presence_key *keys, int n, const char *buf, const presence_record *r, const char **why)
{
    if (!r->signed_len || !r->nmacs) { *why = "unsigned"; return 0; }
    *why = "unknown key id";
    for (int m = 0; m < r->nmacs; m++)
        for (int i = 0; i < n; i++) {
            if (strcmp(keys[i].kid, r->kid[m])) continue;
            char hex[PRESENCE_MAC_LEN + 1];
            hmac_hex(keys[i].secret, keys[i].len, buf, r->signed_len, hex);
            if (CRYPTO_memcmp(hex, r->mac[m], PRESENCE_MAC_LEN) == 0) return 1;
            *why = "wrong MAC";
        }
    return 0;
}
