/* The TLS files of the configuration, checked before anything starts:
 * `routemq run`, `routemq check` (cli_run.c, cli_app.c) report a missing or
 * unreadable certificate or key by its variable and path instead of a
 * worker failing its handshake later. */
#include "tls_files.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Fills err with "var: path: " and returns a pointer past it. */
static char *head(char *err, size_t errlen, const char *var, const char *path, size_t *left)
{
    int n = snprintf(err, errlen, "%s: %s: ", var, path);
    if (n < 0 || (size_t)n >= errlen) n = (int)errlen - 1;
    *left = errlen - (size_t)n;
    return err + n;
}

/* OpenSSL's last reason, or "" (and the queue emptied either way). */
static const char *ssl_reason(char *buf, size_t n)
{
    unsigned long e = ERR_peek_last_error();
    buf[0] = 0;
    if (e) ERR_error_string_n(e, buf, n);
    ERR_clear_error();
    return buf;
}

static FILE *open_file(const char *var, const char *path, char *err, size_t errlen)
{
    size_t left;
    char *p = head(err, errlen, var, path, &left);
    struct stat st;
    if (stat(path, &st) != 0) { snprintf(p, left, "%s", strerror(errno)); return NULL; }
    if (!S_ISREG(st.st_mode)) { snprintf(p, left, "not a regular file"); return NULL; }
    FILE *f = fopen(path, "r");
    if (!f) snprintf(p, left, "%s", strerror(errno));
    return f;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    *(int *)u = 1;
    return 0;
}

/* Reads the PEM certificates of path; returns the first (the caller frees it) or NULL with err set. */
static X509 *read_certs(const char *var, const char *path, char *err, size_t errlen)
{
    FILE *f = open_file(var, path, err, errlen);
    if (!f) return NULL;
    ERR_clear_error();
    X509 *first = PEM_read_X509(f, NULL, NULL, NULL);
    for (X509 *x; first && (x = PEM_read_X509(f, NULL, NULL, NULL));) X509_free(x);
    fclose(f);
    char why[256];
    ssl_reason(why, sizeof why);
    if (!first) {
        size_t left;
        char *p = head(err, errlen, var, path, &left);
        snprintf(p, left, "no PEM certificate in it%s%s%s", why[0] ? " (" : "", why, why[0] ? ")" : "");
    }
    return first;
}

static int check_key(const char *path, X509 *cert, const char *certpath, char *err, size_t errlen)
{
    const char *var = "MQTT_TLS_KEYFILE";
    FILE *f = open_file(var, path, err, errlen);
    if (!f) return -1;
    int asked = 0;
    ERR_clear_error();
    EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, no_passphrase, &asked);
    fclose(f);
    char why[256];
    ssl_reason(why, sizeof why);
    size_t left;
    char *p = head(err, errlen, var, path, &left);
    if (!key) {
        if (asked) snprintf(p, left, "the key is encrypted: routemq cannot ask for its passphrase");
        else snprintf(p, left, "no PEM private key in it%s%s%s", why[0] ? " (" : "", why, why[0] ? ")" : "");
        return -1;
    }
    int ok = !cert || X509_check_private_key(cert, key) == 1;
    ERR_clear_error();
    EVP_PKEY_free(key);
    if (!ok) {
        snprintf(p, left, "the key does not belong to the certificate of MQTT_TLS_CERTFILE (%s)", certpath);
        return -1;
    }
    err[0] = 0;
    return 0;
}

int tls_check_files(const config *c, char *err, size_t errlen)
{
    if (!c->tls_enabled) return 0;
    X509 *x;
    if (c->tls_ca_certs) {
        if (!(x = read_certs("MQTT_TLS_CA_CERTS", c->tls_ca_certs, err, errlen))) return -1;
        X509_free(x);
    }
    X509 *cert = NULL;
    if (c->tls_certfile && !(cert = read_certs("MQTT_TLS_CERTFILE", c->tls_certfile, err, errlen))) return -1;
    int rc = c->tls_keyfile ? check_key(c->tls_keyfile, cert, c->tls_certfile, err, errlen) : 0;
    X509_free(cert);
    return rc;
}
