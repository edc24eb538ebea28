/* Configuration: the environment, then <app>/.env, then defaults (docs/configuration.md). */
#ifndef ROUTEMQ_CONFIG_H
#define ROUTEMQ_CONFIG_H

#include <stddef.h>
#include <stdio.h>

enum { STOP_SESSIONS_AUTO = 0, STOP_SESSIONS_KEEP, STOP_SESSIONS_END };

typedef struct config {
    char *app_dir;          /* absolute path of the application root */
    char *broker;
    int port;
    char *username;
    char *password;         /* never logged; wiped from the environment block */
    char *client_id;
    char *group_name;
    int protocol;           /* 5 or 4 (MQTT 3.1.1) */
    int keepalive;
    int session_expiry;
    int tls_enabled;
    char *tls_ca_certs, *tls_certfile, *tls_keyfile;
    int tls_insecure;
    double retry_min_delay, retry_max_delay;
    double connect_timeout; /* MQTT_CONNECT_TIMEOUT: bound of one connect attempt, seconds */

    int worker_count;       /* 0: unset, each route's worker_count applies */
    int auto_scale;
    int presence;           /* ROUTEMQ_PRESENCE: the master's presence connection (on by default) */
    int min_count, max_count;
    double heartbeat_timeout, handler_timeout, stop_timeout;
    long max_messages;      /* 0: never recycle on messages */
    long max_memory_mb;     /* 0: never recycle on memory */
    double restart_max_delay; /* cap of the crash-loop backoff, seconds */
    long max_outgoing;      /* publishes not yet acknowledged before handlers pause */
    long max_outgoing_mb;   /* the same bound in megabytes */
    int concurrency;        /* WORKER_CONCURRENCY: messages in progress per worker */
    long max_kept;          /* WORKER_MAX_KEPT: messages a worker keeps at once (taken, not finished) */
    long max_kept_mb;       /* WORKER_MAX_KEPT_MB: their bytes, reserved in the keep file at start */

    char *http;             /* host:port or NULL */
    char *http_token;       /* ROUTEMQ_HTTP_TOKEN(_FILE): Bearer token of the admin endpoint; never logged */
    int http_metrics_open;  /* ROUTEMQ_HTTP_METRICS=open: /metrics without the token */
    char *http_tls_cert, *http_tls_key; /* ROUTEMQ_HTTP_TLS_CERT / _KEY: PEM files; NULL: plain HTTP */
    char *instance;         /* host part of client ids */
    char *run_dir;
    int poison_attempts;
    char *dlq_topic;        /* prefix; NULL means routemq/dlq/<topic> */
    int dlq_topic_off;      /* ROUTEMQ_DLQ_TOPIC=off: dead letters are only stored */
    char *dlq_store;        /* ROUTEMQ_DLQ_STORE: the SQLite dead-letter store (<run dir>/dead-letters.db) */
    long dlq_max;           /* ROUTEMQ_DLQ_MAX: records kept in it; the oldest go first */
    int msg_retry_attempts;     /* ROUTEMQ_RETRY_ATTEMPTS: runs of a failing message, the first included (1: no retry) */
    double msg_retry_delay; /* ROUTEMQ_RETRY_DELAY: seconds before the second run */
    double msg_retry_backoff;   /* ROUTEMQ_RETRY_BACKOFF: factor between one delay and the next (>= 1) */
    double msg_retry_max_delay; /* ROUTEMQ_RETRY_MAX_DELAY: the delays' cap, seconds */
    int log_level;
    int log_json;
    int broker_from_env;    /* MQTT_BROKER was set (env or .env) */
    int stop_sessions;      /* ROUTEMQ_STOP_SESSIONS: STOP_SESSIONS_AUTO | _KEEP | _END */
    int adopt_after;        /* ROUTEMQ_ADOPT_AFTER: seconds before another instance's orphaned sessions are adopted */
    char *cluster_key;      /* ROUTEMQ_CLUSTER_KEY(_FILE): signs presence records; never logged, NULL: none */
    char *cluster_key_previous; /* ROUTEMQ_CLUSTER_KEY_PREVIOUS(_FILE): still accepted while rotating */
} config;

/* Loads the configuration for the application in app_dir. 0 ok; -1 with a
 * message naming the variable in err. */
int config_load(config *c, const char *app_dir, char *err, size_t errlen);
/* err names a variable ("NAME: ..."); when that variable's value came from
 * <app_dir>/.env, err becomes "<app_dir>/.env:<line>: NAME: ...". */
void config_locate_error(const char *app_dir, char *err, size_t errlen);
/* Frees what config_load allocated (and zeroes the password first). */
void config_free(config *c);
/* Parses one dotenv file into a NULL-terminated KEY=VALUE list. 0 ok or the
 * file is missing; -1 with "<file>:<line>: reason" in err. */
int config_read_dotenv(const char *path, char ***out, char *err, size_t errlen);
/* The same from an open stream; path only names it in errors. */
int config_parse_dotenv(FILE *f, const char *path, char ***out, char *err, size_t errlen);
/* Overwrites MQTT_PASSWORD=..., ROUTEMQ_HTTP_TOKEN=... and the cluster keys in
 * the process's original environment block so /proc/<pid>/environ (and `ps e`)
 * of the master and its forked workers does not show them. */
void config_scrub_environ(char **envp);

#endif
