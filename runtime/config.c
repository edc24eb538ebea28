/* Configuration loading and validation. Every bad value stops the start with
 * a message that names the variable and the value's problem. */
#include "config.h"
#include "log.h"
#include "presence_record.h"
#include "presence_sign.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define DOTENV_LINE_MAX 65536  /* a .env line longer than this is not configuration */

static char **dotenv;  /* KEY=VALUE pairs from <app>/.env */

/* The value of name: the real environment wins over .env. */
static const char *cfg_get(const char *name)
{
    const char *v = getenv(name);
    if (v) return v;
    size_t n = strlen(name);
    for (char **e = dotenv; e && *e; e++)
        if (!strncmp(*e, name, n) && (*e)[n] == '=') return *e + n + 1;
    return NULL;
}

static char *dup_or(const char *name, const char *def)
{
    const char *v = cfg_get(name);
    if (v && !*v) v = NULL;
    v = v ? v : def;
    return v ? strdup(v) : NULL;
}

static int get_long(const char *name, long def, long min, long max, long *out, char *err, size_t errlen)
{
    const char *v = cfg_get(name);
    if (!v || !*v) { *out = def; return 0; }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < min || x > max) {
        snprintf(err, errlen, "%s: '%s' is not a whole number from %ld to %ld", name, v, min, max);
        return -1;
    }
    *out = x;
    return 0;
}

static int get_int(const char *name, int def, int min, int max, int *out, char *err, size_t errlen)
{
    long x;
    if (get_long(name, def, min, max, &x, err, errlen)) return -1;
    *out = (int)x;
    return 0;
}

static int get_double(const char *name, double def, double min, double *out, char *err, size_t errlen)
{
    const char *v = cfg_get(name);
    if (!v || !*v) { *out = def; return 0; }
    char *end;
    double x = strtod(v, &end);
    if (*end || end == v || !(x >= min) || x > 1e9) {
        snprintf(err, errlen, "%s: '%s' is not a number of seconds >= %g", name, v, min);
        return -1;
    }
    *out = x;
    return 0;
}

static int get_bool(const char *name, int def, int *out, char *err, size_t errlen)
{
    const char *v = cfg_get(name);
    if (!v || !*v) { *out = def; return 0; }
    if (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes") || !strcasecmp(v, "on")) *out = 1;
    else if (!strcasecmp(v, "false") || !strcmp(v, "0") || !strcasecmp(v, "no") || !strcasecmp(v, "off")) *out = 0;
    else {
        snprintf(err, errlen, "%s: '%s' is not a boolean (true or false)", name, v);
        return -1;
    }
    return 0;
}

static void free_list(char **l)
{
    for (char **e = l; e && *e; e++) free(*e);
    free(l);
}

/* Strips a dotenv value: quotes (with \n and \" inside double quotes), or an
 * unquoted value with a trailing " # comment". Returns 0 or -1 (unterminated quote). */
static int dotenv_value(char *v)
{
    char q = *v;
    if (q == '"' || q == '\'') {
        char *w = v, *r = v + 1;
        for (; *r && *r != q; r++) {
            if (q == '"' && *r == '\\' && r[1]) {
                r++;
                *w++ = *r == 'n' ? '\n' : *r;
            } else *w++ = *r;
        }
        if (*r != q) return -1;
        *w = 0;
        return 0;
    }
    char *hash = strstr(v, " #");
    if (hash) *hash = 0;
    size_t n = strlen(v);
    while (n && isspace((unsigned char)v[n - 1])) v[--n] = 0;
    return 0;
}

int config_read_dotenv(const char *path, char ***out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = config_parse_dotenv(f, path, out, err, errlen);
    fclose(f);
    return rc;
}

int config_parse_dotenv(FILE *f, const char *path, char ***out, char *err, size_t errlen)
{
    *out = NULL;
    size_t n = 0, cap = 8, linecap = 0;
    char **list = calloc(cap, sizeof *list);
    char *line = NULL;
    ssize_t got;
    int lineno = 0, rc = 0;
    while (list && (got = getline(&line, &linecap, f)) >= 0) {
        lineno++;
        if (got > DOTENV_LINE_MAX) {
            snprintf(err, errlen, "%s:%d: line too long (at most %d bytes)", path, lineno, DOTENV_LINE_MAX);
            rc = -1;
            break;
        }
        if (memchr(line, 0, (size_t)got)) {
            /* Everything after it would be silently dropped. */
            snprintf(err, errlen, "%s:%d: NUL byte in line", path, lineno);
            rc = -1;
            break;
        }
        line[strcspn(line, "\r\n")] = 0;
        char *s = line;
        while (isspace((unsigned char)*s)) s++;
        if (!*s || *s == '#') continue;
        if (!strncmp(s, "export ", 7)) s += 7;
        while (isspace((unsigned char)*s)) s++;
        char *eq = strchr(s, '=');
        char *k = s;
        size_t klen = eq ? (size_t)(eq - s) : 0;
        while (klen && isspace((unsigned char)k[klen - 1])) klen--;
        int ok = eq && klen > 0;
        for (size_t i = 0; ok && i < klen; i++)
            ok = isalnum((unsigned char)k[i]) || k[i] == '_';
        if (!ok) {
            snprintf(err, errlen, "%s:%d: expected KEY=VALUE", path, lineno);
            rc = -1;
            break;
        }
        char *v = eq + 1;
        while (isspace((unsigned char)*v)) v++;
        if (dotenv_value(v)) {
            snprintf(err, errlen, "%s:%d: unterminated quote", path, lineno);
            rc = -1;
            break;
        }
        if (n + 2 > cap) {
            char **nl = realloc(list, (cap *= 2) * sizeof *list);
            if (!nl) { snprintf(err, errlen, "%s: out of memory", path); rc = -1; break; }
            list = nl;
        }
        size_t vlen = strlen(v);
        list[n] = malloc(klen + vlen + 2);
        if (!list[n]) { snprintf(err, errlen, "%s: out of memory", path); rc = -1; break; }
        memcpy(list[n], k, klen);
        list[n][klen] = '=';
        memcpy(list[n] + klen + 1, v, vlen + 1);
        list[++n] = NULL;
    }
    free(line);
    if (!list) { snprintf(err, errlen, "%s: out of memory", path); return -1; }
    if (rc) { free_list(list); return -1; }
    *out = list;
    return 0;
}

/* routemq-<application directory name>-<4 hex digits of its absolute path>:
 * two applications on one host must not share client ids (they would take
 * each other's sessions over and receive each other's messages), while one
 * application keeps the same ids across restarts and on every host. */
static char *default_client_id(const char *app_dir)
{
    const char *base = strrchr(app_dir, '/');
    base = base && base[1] ? base + 1 : app_dir;
    char name[40];
    size_t n = 0;
    for (const char *p = base; *p && n < sizeof name - 1; p++)
        name[n++] = isalnum((unsigned char)*p) || *p == '-' || *p == '_' ? *p : '_';
    name[n] = 0;
    uint32_t h = 2166136261u;
    for (const char *p = app_dir; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    char *id;
    if (asprintf(&id, "routemq-%s-%04x", n ? name : "app", (unsigned)(h & 0xffff)) < 0) return NULL;
    return id;
}

/* A secret from NAME or from the file NAME_FILE names (one trailing newline
 * dropped); NULL in *out when neither is set. The value never enters err. */
static int get_secret(const char *name, char **out, char *err, size_t errlen)
{
    char fname[64];
    snprintf(fname, sizeof fname, "%s_FILE", name);
    const char *v = cfg_get(name), *file = cfg_get(fname);
    *out = NULL;
    if (v && *v && file && *file) {
        snprintf(err, errlen, "%s: set either %s or %s, not both", name, name, fname);
        return -1;
    }
    if (v && *v) {
        *out = strdup(v);
    } else if (file && *file) {
        FILE *f = fopen(file, "re");
        if (!f) {
            snprintf(err, errlen, "%s: cannot read '%s': %s", fname, file, strerror(errno));
            return -1;
        }
        char buf[4097];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        if (n == sizeof buf) {
            snprintf(err, errlen, "%s: '%s' is longer than %zu bytes", fname, file, sizeof buf - 1);
            return -1;
        }
        if (n && buf[n - 1] == '\n') n--;
        if (n && buf[n - 1] == '\r') n--;
        buf[n] = 0;
        if (memchr(buf, 0, n)) {
            snprintf(err, errlen, "%s: '%s' holds a NUL byte", fname, file);
            return -1;
        }
        *out = strdup(buf);
        explicit_bzero(buf, sizeof buf);
    } else {
        return 0;
    }
    if (!*out) { snprintf(err, errlen, "out of memory"); return -1; }
    if (strlen(*out) < PRESENCE_KEY_MIN) {
        snprintf(err, errlen, "%s: the key is shorter than %d bytes; make one with `openssl rand -hex 32`", name,
                 PRESENCE_KEY_MIN);
        return -1;
    }
    return 0;
}

/* The cluster keys (docs/deployment.md) and the identity that goes into presence records. */
static int load_trust(config *c, char *err, size_t errlen)
{
    char why[300];
    if (!presence_record_roundtrip(c->instance, why, sizeof why)) {
        snprintf(err, errlen, "ROUTEMQ_INSTANCE: '%s' cannot be a presence record's instance: %s", c->instance, why);
        return -1;
    }
    if (!presence_record_roundtrip(c->client_id, why, sizeof why)) {
        snprintf(err, errlen, "MQTT_CLIENT_ID: '%s' cannot be a presence record's client id: %s", c->client_id, why);
        return -1;
    }
    if (get_secret("ROUTEMQ_CLUSTER_KEY", &c->cluster_key, err, errlen)) return -1;
    if (get_secret("ROUTEMQ_CLUSTER_KEY_PREVIOUS", &c->cluster_key_previous, err, errlen)) return -1;
    if (c->cluster_key_previous && !c->cluster_key) {
        snprintf(err, errlen, "ROUTEMQ_CLUSTER_KEY_PREVIOUS: set without ROUTEMQ_CLUSTER_KEY (the key records are "
                 "signed with)");
        return -1;
    }
    return 0;
}

/* A token goes in an HTTP header: printable ASCII without spaces, and long
 * enough not to be guessed. */
static int check_token(const char *name, const char *t, char *err, size_t errlen)
{
    size_t n = strlen(t);
    for (size_t i = 0; i < n; i++)
        if (t[i] <= ' ' || t[i] > '~') {
            snprintf(err, errlen, "%s: the token must be printable ASCII without spaces (character %zu is not)",
                     name, i + 1);
            return -1;
        }
    if (n < 16) {
        snprintf(err, errlen, "%s: the token has %zu characters; use at least 16 (e.g. openssl rand -hex 32)",
                 name, n);
        return -1;
    }
    return 0;
}

/* ROUTEMQ_HTTP_TOKEN(_FILE), ROUTEMQ_HTTP_METRICS, ROUTEMQ_HTTP_TLS_CERT/_KEY.
 * The token's value is never put in an error message. */
static int load_http_auth(config *c, char *err, size_t errlen)
{
    const char *tok = cfg_get("ROUTEMQ_HTTP_TOKEN"), *file = cfg_get("ROUTEMQ_HTTP_TOKEN_FILE");
    if (tok && !*tok) tok = NULL;
    if (file && !*file) file = NULL;
    if (tok && file) {
        snprintf(err, errlen, "ROUTEMQ_HTTP_TOKEN_FILE: set together with ROUTEMQ_HTTP_TOKEN; set only one");
        return -1;
    }
    if (tok) {
        if (check_token("ROUTEMQ_HTTP_TOKEN", tok, err, errlen)) return -1;
        c->http_token = strdup(tok);
    } else if (file) {
        FILE *f = fopen(file, "r");
        if (!f) {
            snprintf(err, errlen, "ROUTEMQ_HTTP_TOKEN_FILE: %s: %s", file, strerror(errno));
            return -1;
        }
        char buf[1024];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        int big = n == sizeof buf - 1 && fgetc(f) != EOF;
        fclose(f);
        buf[n] = 0;
        while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;  /* echo > file */
        int bad = big || check_token("ROUTEMQ_HTTP_TOKEN_FILE", buf, err, errlen);
        if (big) snprintf(err, errlen, "ROUTEMQ_HTTP_TOKEN_FILE: %s: more than 1023 bytes; it must hold the token only", file);
        if (!bad) c->http_token = strdup(buf);
        explicit_bzero(buf, sizeof buf);
        if (bad) return -1;
    }
    const char *v = cfg_get("ROUTEMQ_HTTP_METRICS");
    if (!v || !*v || !strcmp(v, "token")) c->http_metrics_open = 0;
    else if (!strcmp(v, "open")) c->http_metrics_open = 1;
    else {
        snprintf(err, errlen, "ROUTEMQ_HTTP_METRICS: '%s' is not token or open", v);
        return -1;
    }
    c->http_tls_cert = dup_or("ROUTEMQ_HTTP_TLS_CERT", NULL);
    c->http_tls_key = dup_or("ROUTEMQ_HTTP_TLS_KEY", NULL);
    if (!c->http_tls_cert != !c->http_tls_key) {
        snprintf(err, errlen, "%s: required together with %s",
                 c->http_tls_cert ? "ROUTEMQ_HTTP_TLS_KEY" : "ROUTEMQ_HTTP_TLS_CERT",
                 c->http_tls_cert ? "ROUTEMQ_HTTP_TLS_CERT" : "ROUTEMQ_HTTP_TLS_KEY");
        return -1;
    }
    const char *files[2][2] = { { "ROUTEMQ_HTTP_TLS_CERT", c->http_tls_cert }, { "ROUTEMQ_HTTP_TLS_KEY", c->http_tls_key } };
    for (int i = 0; i < 2; i++)
        if (files[i][1] && access(files[i][1], R_OK)) {
            snprintf(err, errlen, "%s: %s: %s", files[i][0], files[i][1], strerror(errno));
            return -1;
        }
    return 0;
}

static int load_values(config *c, char *err, size_t errlen)
{
    long l;
    const char *v;

    c->broker_from_env = cfg_get("MQTT_BROKER") != NULL && *cfg_get("MQTT_BROKER");
    c->broker = dup_or("MQTT_BROKER", "localhost");
    if (get_int("MQTT_PORT", 1883, 1, 65535, &c->port, err, errlen)) {
        snprintf(err, errlen, "MQTT_PORT: '%s' is not a port number (1-65535)", cfg_get("MQTT_PORT"));
        return -1;
    }
    c->username = dup_or("MQTT_USERNAME", NULL);
    c->password = dup_or("MQTT_PASSWORD", NULL);
    c->client_id = dup_or("MQTT_CLIENT_ID", NULL);
    if (!c->client_id) c->client_id = default_client_id(c->app_dir);
    c->group_name = dup_or("MQTT_GROUP_NAME", "routemq");
    if (strpbrk(c->group_name, "/+#")) {
        snprintf(err, errlen, "MQTT_GROUP_NAME: '%s' must not contain '/', '+' or '#'", c->group_name);
        return -1;
    }
    v = cfg_get("MQTT_PROTOCOL");
    if (!v || !*v || !strcmp(v, "5") || !strcmp(v, "5.0") || !strcasecmp(v, "mqttv5")) c->protocol = 5;
    else if (!strcmp(v, "3.1.1") || !strcmp(v, "4") || !strcasecmp(v, "mqttv311")) c->protocol = 4;
    else {
        snprintf(err, errlen, "MQTT_PROTOCOL: '%s' is not a supported protocol (5 or 3.1.1)", v);
        return -1;
    }
    if (get_int("MQTT_KEEPALIVE", 60, 5, 65535, &c->keepalive, err, errlen)) return -1;
    if (get_int("MQTT_SESSION_EXPIRY", 300, 0, INT_MAX, &c->session_expiry, err, errlen)) return -1;
    if (get_bool("MQTT_TLS_ENABLED", 0, &c->tls_enabled, err, errlen)) return -1;
    c->tls_ca_certs = dup_or("MQTT_TLS_CA_CERTS", NULL);
    c->tls_certfile = dup_or("MQTT_TLS_CERTFILE", NULL);
    c->tls_keyfile = dup_or("MQTT_TLS_KEYFILE", NULL);
    if (get_bool("MQTT_TLS_INSECURE", 0, &c->tls_insecure, err, errlen)) return -1;
    if (c->tls_enabled && !c->tls_ca_certs) {
        snprintf(err, errlen, "MQTT_TLS_CA_CERTS: required when MQTT_TLS_ENABLED=true");
        return -1;
    }
    if (!c->tls_certfile != !c->tls_keyfile) {
        snprintf(err, errlen, "%s: required together with %s",
                 c->tls_certfile ? "MQTT_TLS_KEYFILE" : "MQTT_TLS_CERTFILE",
                 c->tls_certfile ? "MQTT_TLS_CERTFILE" : "MQTT_TLS_KEYFILE");
        return -1;
    }
    if (get_double("MQTT_RETRY_MIN_DELAY", 1, 0.01, &c->retry_min_delay, err, errlen)) return -1;
    if (get_double("MQTT_RETRY_MAX_DELAY", 30, 0.01, &c->retry_max_delay, err, errlen)) return -1;
    if (c->retry_max_delay < c->retry_min_delay) {
        snprintf(err, errlen, "MQTT_RETRY_MAX_DELAY: %g is less than MQTT_RETRY_MIN_DELAY %g",
                 c->retry_max_delay, c->retry_min_delay);
        return -1;
    }

    if (get_double("MQTT_CONNECT_TIMEOUT", 10, 0.1, &c->connect_timeout, err, errlen)) return -1;

    if (get_int("WORKER_COUNT", 0, 1, 1024, &c->worker_count, err, errlen)) return -1;
    if (get_bool("WORKER_AUTO_SCALE", 0, &c->auto_scale, err, errlen)) return -1;
    if (get_bool("ROUTEMQ_PRESENCE", 1, &c->presence, err, errlen)) return -1;
    if (get_int("WORKER_MIN_COUNT", 1, 1, 1024, &c->min_count, err, errlen)) return -1;
    if (get_int("WORKER_MAX_COUNT", 8, 1, 1024, &c->max_count, err, errlen)) return -1;
    if (c->max_count < c->min_count) {
        snprintf(err, errlen, "WORKER_MAX_COUNT: %d is less than WORKER_MIN_COUNT %d", c->max_count, c->min_count);
        return -1;
    }
    if (get_double("WORKER_HEARTBEAT_TIMEOUT", 10, 0.1, &c->heartbeat_timeout, err, errlen)) return -1;
    if (get_double("WORKER_HANDLER_TIMEOUT", 30, 0.01, &c->handler_timeout, err, errlen)) return -1;
    if (get_double("WORKER_STOP_TIMEOUT", 10, 0, &c->stop_timeout, err, errlen)) return -1;
    if (get_long("WORKER_MAX_MESSAGES", 0, 0, LONG_MAX, &c->max_messages, err, errlen)) return -1;
    if (get_long("WORKER_MAX_MEMORY_MB", 0, 0, 1L << 30, &c->max_memory_mb, err, errlen)) return -1;
    if (get_double("WORKER_RESTART_MAX_DELAY", 30, 0.01, &c->restart_max_delay, err, errlen)) return -1;
    /* Packet ids are 16 bits: the outgoing backlog must stay well below 65535. */
    if (get_long("WORKER_MAX_OUTGOING", 1000, 1, 50000, &c->max_outgoing, err, errlen)) return -1;
    if (get_long("WORKER_MAX_OUTGOING_MB", 16, 1, 4096, &c->max_outgoing_mb, err, errlen)) return -1;
    if (get_int("WORKER_CONCURRENCY", 1, 1, 4096, &c->concurrency, err, errlen)) return -1;
    /* The keep's records and bytes are reserved on disk per slot at start. */
    if (get_long("WORKER_MAX_KEPT", 10000, 1, 1000000, &c->max_kept, err, errlen)) return -1;
    if (get_long("WORKER_MAX_KEPT_MB", 32, 1, 65536, &c->max_kept_mb, err, errlen)) return -1;
    if (c->max_kept < c->concurrency) {
        snprintf(err, errlen, "WORKER_MAX_KEPT: %ld is less than WORKER_CONCURRENCY %d (each message in progress "
                 "is kept)", c->max_kept, c->concurrency);
        return -1;
    }

    c->http = dup_or("ROUTEMQ_HTTP", NULL);
    if (c->http && !strchr(c->http, ':')) {
        snprintf(err, errlen, "ROUTEMQ_HTTP: '%s' is not host:port", c->http);
        return -1;
    }
    if (load_http_auth(c, err, errlen)) return -1;
    c->instance = dup_or("ROUTEMQ_INSTANCE", NULL);
    if (!c->instance) {
        char host[256] = "localhost";
        gethostname(host, sizeof host - 1);
        c->instance = strdup(host);
    }
    if (strpbrk(c->instance, "/+#")) {
        snprintf(err, errlen, "ROUTEMQ_INSTANCE: '%s' must not contain '/', '+' or '#'", c->instance);
        return -1;
    }
    c->run_dir = dup_or("ROUTEMQ_RUN_DIR", NULL);
    if (!c->run_dir && asprintf(&c->run_dir, "%s/.routemq", c->app_dir) < 0) c->run_dir = NULL;
    if (get_long("ROUTEMQ_POISON_ATTEMPTS", 3, 1, 1000, &l, err, errlen)) return -1;
    c->poison_attempts = (int)l;
    c->dlq_topic = dup_or("ROUTEMQ_DLQ_TOPIC", NULL);
    if (c->dlq_topic && !strcmp(c->dlq_topic, "off")) {
        c->dlq_topic_off = 1;
        free(c->dlq_topic);
        c->dlq_topic = NULL;
    }
    if (c->dlq_topic && strpbrk(c->dlq_topic, "+#")) {
        snprintf(err, errlen, "ROUTEMQ_DLQ_TOPIC: '%s' must not contain '+' or '#'", c->dlq_topic);
        return -1;
    }
    c->dlq_store = dup_or("ROUTEMQ_DLQ_STORE", NULL);
    if (!c->dlq_store && c->run_dir && asprintf(&c->dlq_store, "%s/dead-letters.db", c->run_dir) < 0) c->dlq_store = NULL;
    if (get_long("ROUTEMQ_DLQ_MAX", 100000, 1, 100000000, &c->dlq_max, err, errlen)) return -1;
    if (get_int("ROUTEMQ_RETRY_ATTEMPTS", 1, 1, 1000, &c->msg_retry_attempts, err, errlen)) return -1;
    if (get_double("ROUTEMQ_RETRY_DELAY", 1, 0, &c->msg_retry_delay, err, errlen)) return -1;
    if (get_double("ROUTEMQ_RETRY_MAX_DELAY", 300, 0, &c->msg_retry_max_delay, err, errlen)) return -1;
    v = cfg_get("ROUTEMQ_RETRY_BACKOFF");
    if (v && *v) {
        char *end;
        c->msg_retry_backoff = strtod(v, &end);
        if (*end || end == v || !(c->msg_retry_backoff >= 1) || c->msg_retry_backoff > 1000) {
            snprintf(err, errlen, "ROUTEMQ_RETRY_BACKOFF: '%s' is not a factor from 1 to 1000", v);
            return -1;
        }
    } else {
        c->msg_retry_backoff = 2;
    }
    v = cfg_get("ROUTEMQ_STOP_SESSIONS");
    if (!v || !*v || !strcmp(v, "auto")) c->stop_sessions = STOP_SESSIONS_AUTO;
    else if (!strcmp(v, "keep")) c->stop_sessions = STOP_SESSIONS_KEEP;
    else if (!strcmp(v, "end")) c->stop_sessions = STOP_SESSIONS_END;
    else {
        snprintf(err, errlen, "ROUTEMQ_STOP_SESSIONS: '%s' is not auto, keep or end", v);
        return -1;
    }
    if (get_int("ROUTEMQ_ADOPT_AFTER", 30, 1, INT_MAX, &c->adopt_after, err, errlen)) return -1;
    const char *adopt = cfg_get("ROUTEMQ_ADOPT_AFTER");
    if (c->protocol == 5 && c->session_expiry > 0 && c->adopt_after >= c->session_expiry && (!adopt || !*adopt))
        c->adopt_after = c->session_expiry > 1 ? c->session_expiry / 2 : 1;  /* the default adapts; a set value is checked */
    if (c->protocol == 5 && c->session_expiry > 0 && c->adopt_after >= c->session_expiry) {
        snprintf(err, errlen, "ROUTEMQ_ADOPT_AFTER: %d s must be below MQTT_SESSION_EXPIRY (%d s), or the sessions "
                 "expire with their messages before anyone adopts them", c->adopt_after, c->session_expiry);
        return -1;
    }
    v = cfg_get("LOG_LEVEL");
    c->log_level = LOGL_INFO;
    if (v && *v && (c->log_level = log_level_parse(v)) < 0) {
        snprintf(err, errlen, "LOG_LEVEL: '%s' is not one of debug, info, warn, error", v);
        return -1;
    }
    v = cfg_get("LOG_FORMAT");
    if (!v || !*v || !strcmp(v, "text")) c->log_json = 0;
    else if (!strcmp(v, "json")) c->log_json = 1;
    else {
        snprintf(err, errlen, "LOG_FORMAT: '%s' is not text or json", v);
        return -1;
    }
    if (!c->broker || !c->client_id || !c->group_name || !c->instance || !c->run_dir) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return load_trust(c, err, errlen);
}

/* The line of path that defines name (the first, as cfg_get reads it); 0 when none. */
static int dotenv_line(const char *path, const char *name)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[8192];
    int lineno = 0, found = 0;
    size_t n = strlen(name);
    while (!found && fgets(line, sizeof line, f)) {
        lineno++;
        char *s = line;
        while (isspace((unsigned char)*s)) s++;
        if (!strncmp(s, "export ", 7)) s += 7;
        while (isspace((unsigned char)*s)) s++;
        if (strncmp(s, name, n)) continue;
        s += n;
        while (*s == ' ' || *s == '\t') s++;
        found = *s == '=';
    }
    fclose(f);
    return found ? lineno : 0;
}

void config_locate_error(const char *app_dir, char *err, size_t errlen)
{
    size_t n = strcspn(err, ":");
    char name[128];
    if (!err[n] || n == 0 || n >= sizeof name || !app_dir) return;
    memcpy(name, err, n);
    name[n] = 0;
    for (size_t i = 0; i < n; i++)
        if (!isupper((unsigned char)name[i]) && !isdigit((unsigned char)name[i]) && name[i] != '_') return;
    if (getenv(name)) return;  /* the real environment wins over .env */
    char *path;
    if (asprintf(&path, "%s/.env", app_dir) < 0) return;
    int line = dotenv_line(path, name);
    char *copy = line ? strdup(err) : NULL;
    if (copy) snprintf(err, errlen, "%s:%d: %s", path, line, copy);
    free(copy);
    free(path);
}

int config_load(config *c, const char *app_dir, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->app_dir = realpath(app_dir, NULL);
    if (!c->app_dir) {
        snprintf(err, errlen, "--app %s: %s", app_dir, strerror(errno));
        return -1;
    }
    char *path;
    if (asprintf(&path, "%s/.env", c->app_dir) < 0) return -1;
    int rc = config_read_dotenv(path, &dotenv, err, errlen);
    free(path);
    if (rc == 0 && (rc = load_values(c, err, errlen))) config_locate_error(c->app_dir, err, errlen);
    free_list(dotenv);
    dotenv = NULL;
    return rc;
}

void config_free(config *c)
{
    if (c->password) explicit_bzero(c->password, strlen(c->password));
    if (c->cluster_key) explicit_bzero(c->cluster_key, strlen(c->cluster_key));
    if (c->cluster_key_previous) explicit_bzero(c->cluster_key_previous, strlen(c->cluster_key_previous));
    if (c->http_token) explicit_bzero(c->http_token, strlen(c->http_token));
    char **strs[] = { &c->app_dir, &c->broker, &c->username, &c->password, &c->client_id,
                      &c->group_name, &c->tls_ca_certs, &c->tls_certfile, &c->tls_keyfile,
                      &c->http, &c->instance, &c->run_dir, &c->dlq_topic, &c->dlq_store, &c->cluster_key,
                      &c->cluster_key_previous, &c->http_token, &c->http_tls_cert, &c->http_tls_key };
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) { free(*strs[i]); *strs[i] = NULL; }
}

void config_scrub_environ(char **envp)
{
    static const char *const secrets[] = { "MQTT_PASSWORD=", "ROUTEMQ_CLUSTER_KEY=", "ROUTEMQ_CLUSTER_KEY_PREVIOUS=",
                                           "ROUTEMQ_HTTP_TOKEN=" };
    for (char **e = envp; e && *e; e++)
        for (size_t i = 0; i < sizeof secrets / sizeof *secrets; i++) {
            size_t n = strlen(secrets[i]);
            if (!strncmp(*e, secrets[i], n)) memset(*e + n, 'x', strlen(*e + n));
        }
    unsetenv("MQTT_PASSWORD");
    unsetenv("ROUTEMQ_CLUSTER_KEY");
    unsetenv("ROUTEMQ_CLUSTER_KEY_PREVIOUS");
    unsetenv("ROUTEMQ_HTTP_TOKEN");
}
