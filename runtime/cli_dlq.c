/* `routemq dlq list | show | replay | delete`: the dead-letter store of the
 * application's instance (ROUTEMQ_DLQ_STORE, <run dir>/dead-letters.db),
 * opened directly: list and show work while no instance runs. A replay
 * only marks records asked for; the instance's workers take them. */
#include "cli.h"
#include "config.h"
#include "dlq_json.h"
#include "dlq_store.h"
#include "rundir.h"
#include "topic_pattern.h"
#include "worker_props.h"

#include <errno.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DLQ_LIST_DEFAULT 50

typedef struct dlq_args {
    const char *cmd;         /* list, show, replay, delete */
    const char *app;
    const char *route;
    int64_t since_ms;
    long limit;
    int json, all, yes;
    int64_t *ids;
    int nids;
} dlq_args;

static void usage(FILE *out)
{
    fputs("usage: routemq dlq <command> [--app DIR]\n"
          "  list   [--route R] [--since 10m] [--limit N] [--json]   dead letters, newest first\n"
          "  show   ID [--json]                                      one record, every field\n"
          "  replay ID... | --all [--route R] [--yes]                hand them to the instance's workers again\n"
          "  delete ID... | --all [--route R] [--yes]                remove them from the store\n", out);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "90", "90s", "10m", "2h", "7d" as milliseconds; -1 when malformed. */
static int64_t parse_duration(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0) return -1;
    double unit = 1;
    if (!strcmp(end, "") || !strcmp(end, "s")) unit = 1;
    else if (!strcmp(end, "m")) unit = 60;
    else if (!strcmp(end, "h")) unit = 3600;
    else if (!strcmp(end, "d")) unit = 86400;
    else return -1;
    return (int64_t)(v * unit * 1000);
}

static int parse_id(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s == 0 || *end || errno || v < 1) return -1;
    *out = v;
    return 0;
}

/* 0, or EXIT_USAGE with the reason printed. */
static int parse(int argc, char **argv, dlq_args *a)
{
    a->app = ".";
    if (argc < 1 || argv[0][0] == '-') {
        if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
            usage(stdout);
            exit(EXIT_OK);
        }
        fputs("routemq dlq: which command? list, show, replay or delete\n", stderr);
        usage(stderr);
        return EXIT_USAGE;
    }
    a->cmd = argv[0];
    int list = !strcmp(a->cmd, "list"), show = !strcmp(a->cmd, "show");
    int bulk = !strcmp(a->cmd, "replay") || !strcmp(a->cmd, "delete");
    if (!list && !show && !bulk) {
        fprintf(stderr, "routemq dlq: unknown command '%s' (list, show, replay or delete)\n", a->cmd);
        usage(stderr);
        return EXIT_USAGE;
    }
    a->ids = calloc((size_t)argc, sizeof *a->ids);
    if (!a->ids) return EXIT_USAGE;
    a->limit = list ? DLQ_LIST_DEFAULT : 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *val = NULL;
        int has_val = i + 1 < argc;
        if (!strcmp(o, "--app") || !strcmp(o, "--route") || !strcmp(o, "--since") || !strcmp(o, "--limit")) {
            if (!has_val) {
                fprintf(stderr, "routemq dlq %s: %s needs a value\n", a->cmd, o);
                return EXIT_USAGE;
            }
            val = argv[++i];
        }
        if (!strcmp(o, "--app")) a->app = val;
        else if (!strncmp(o, "--app=", 6)) a->app = o + 6;
        else if (!strcmp(o, "--route") && (list || bulk)) a->route = val;
        else if (!strcmp(o, "--since") && list) {
            int64_t d = parse_duration(val);
            if (d < 0) {
                fprintf(stderr, "routemq dlq list: --since '%s' is not a duration (like 90s, 10m, 2h, 7d)\n", val);
                return EXIT_USAGE;
            }
            a->since_ms = wall_ms() - d;
        } else if (!strcmp(o, "--limit") && list) {
            int64_t n;
            if (parse_id(val, &n) || n > 1000000) {
                fprintf(stderr, "routemq dlq list: --limit '%s' is not a whole number from 1 to 1000000\n", val);
                return EXIT_USAGE;
            }
            a->limit = (long)n;
        } else if (!strcmp(o, "--json") && (list || show)) a->json = 1;
        else if (!strcmp(o, "--all") && bulk) a->all = 1;
        else if (!strcmp(o, "--yes") && bulk) a->yes = 1;
        else if (o[0] == '-' && o[1]) {
            fprintf(stderr, "routemq dlq %s: unknown option '%s'\n", a->cmd, o);
            usage(stderr);
            return EXIT_USAGE;
        } else if (show || bulk) {
            if (parse_id(o, &a->ids[a->nids])) {
                fprintf(stderr, "routemq dlq %s: '%s' is not a dead-letter id (a whole number from 1)\n", a->cmd, o);
                return EXIT_USAGE;
            }
            a->nids++;
        } else {
            fprintf(stderr, "routemq dlq list: unexpected argument '%s'\n", o);
            return EXIT_USAGE;
        }
    }
    if (show && a->nids != 1) {
        fputs("routemq dlq show: give one id: routemq dlq show ID [--json]\n", stderr);
        return EXIT_USAGE;
    }
    if (bulk && a->all == (a->nids > 0)) {
        fprintf(stderr, "routemq dlq %s: give ids, or --all (with --route R for one route's)\n", a->cmd);
        return EXIT_USAGE;
    }
    if (bulk && a->route && !a->all) {
        fprintf(stderr, "routemq dlq %s: --route goes with --all\n", a->cmd);
        return EXIT_USAGE;
    }
    return 0;
}

/* Text from a record for a terminal: control bytes and bytes that are not
 * UTF-8 as \xNN, so a payload cannot move the cursor or change colours. */
static void put_safe(FILE *f, const char *s, size_t n, int keep_newlines)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if ((c == '\n' || c == '\t') && keep_newlines) {
            fputc(c, f);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\x%02x", c);
            i++;
        } else if (c < 0x80) {
            fputc(c, f);
            i++;
        } else {
            size_t k = topic_utf8_char(s + i, n - i);
            if (k == 0) {
                fprintf(f, "\\x%02x", c);
                i++;
            } else {
                fwrite(s + i, 1, k, f);
                i += k;
            }
        }
    }
}

static void put_safe_str(FILE *f, const char *s) { put_safe(f, s ? s : "", s ? strlen(s) : 0, 0); }

/* 1 when a master answers on the run directory's control socket. */
static int instance_running(const config *cfg)
{
    char path[4096];
    if (!cfg->run_dir || rundir_socket_path(cfg->run_dir, path, sizeof path)) return 0;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path) return 0;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int up = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return up;
}

static void age(int64_t ms, char *out, size_t n)
{
    int64_t s = (wall_ms() - ms) / 1000;
    if (s < 0) s = 0;
    if (s < 120) snprintf(out, n, "%llds ago", (long long)s);
    else if (s < 7200) snprintf(out, n, "%lldm ago", (long long)(s / 60));
    else if (s < 172800) snprintf(out, n, "%lldh ago", (long long)(s / 3600));
    else snprintf(out, n, "%lldd ago", (long long)(s / 86400));
}

typedef struct list_ctx {
    int json, n;
    strbuf out;
} list_ctx;

static int list_row(const dlq_entry *e, void *arg)
{
    list_ctx *c = arg;
    if (c->json) {
        if (c->n) sb_put(&c->out, ",", 1);
        dlq_json_entry(&c->out, e, 0);
        c->n++;
        return 0;
    }
    if (c->n++ == 0) printf("%-7s %-20s %-20s %-28s %-7s %-8s %s\n", "ID", "TIME", "ROUTE", "TOPIC", "REASON",
                            "ATTEMPTS", "ERROR");
    char when[40];
    dlq_time_iso(e->time_ms, when, sizeof when);
    when[19] = 0;  /* seconds are enough in a table */
    when[10] = ' ';
    printf("%-7lld %-20s ", (long long)e->id, when);
    int w = (int)strlen(e->route);
    put_safe_str(stdout, e->route);
    printf("%*s ", w < 20 ? 20 - w : 0, "");
    put_safe(stdout, e->topic, e->topic_len, 0);
    w = (int)e->topic_len;
    printf("%*s %-7s %-8d ", w < 28 ? 28 - w : 0, "", e->reason, e->attempts);
    const char *err = e->error ? e->error : "";
    size_t len = strcspn(err, "\n");
    if (len > 100) len = 100;
    put_safe(stdout, err, len, 0);
    if (e->state != DLQ_STORED) printf(" [%s]", dlq_state_name(e->state));
    putchar('\n');
    return 0;
}

static int cmd_list(dlq_store *s, const dlq_args *a, const char *path)
{
    dlq_filter f = { .route = a->route, .since_ms = a->since_ms, .limit = a->limit };
    list_ctx c = { .json = a->json };
    sb_init(&c.out);
    if (a->json) sb_puts(&c.out, "[");
    if (dlq_store_list(s, &f, list_row, &c)) {
        fprintf(stderr, "routemq dlq list: %s\n", dlq_store_error(s));
        sb_free(&c.out);
        return EXIT_USAGE;
    }
    long total = 0, selected = 0;
    f.limit = 0;
    if (dlq_store_count(s, NULL, &total) || dlq_store_count(s, &f, &selected)) total = selected = c.n;
    if (a->json) {
        sb_puts(&c.out, "]\n");
        fputs(c.out.p, stdout);
    } else if (c.n == 0) {
        printf("no dead letters%s%s (store %s holds %ld)\n", a->route ? " on route " : "", a->route ? a->route : "",
               path, total);
    } else if (selected > c.n) {
        printf("(%d of %ld shown; --limit N for more)\n", c.n, selected);
    }
    sb_free(&c.out);
    return EXIT_OK;
}

/* Lines of 16 bytes: offset, hex, and the printable ASCII. */
static void hex_dump(const unsigned char *p, size_t n)
{
    for (size_t off = 0; off < n; off += 16) {
        printf("  %08zx ", off);
        for (size_t i = 0; i < 16; i++) {
            if (off + i < n) printf(" %02x", p[off + i]);
            else fputs("   ", stdout);
        }
        fputs("  ", stdout);
        for (size_t i = 0; i < 16 && off + i < n; i++) putchar(p[off + i] >= 0x20 && p[off + i] < 0x7f ? p[off + i] : '.');
        putchar('\n');
    }
}

static void show_bytes(const char *label, const void *p, size_t n)
{
    if (dlq_is_text(p, n, 1)) {
        printf("%s", label);
        put_safe(stdout, p, n, 1);
        putchar('\n');
        return;
    }
    printf("%s(binary)\n", label);
    hex_dump(p, n);
    strbuf b;
    sb_init(&b);
    dlq_base64(&b, p, n);
    printf("  base64: %s\n", b.p ? b.p : "");
    sb_free(&b);
}

static void show_props(const dlq_entry *e)
{
    const char *at = e->props, *end = at + e->props_len;
    int id;
    const char *k, *v;
    size_t klen, vlen;
    int any = 0;
    while (e->props && worker_props_next(&at, end, &id, &k, &klen, &v, &vlen)) {
        if (!any++) puts("properties:");
        switch (id) {
        case MQTT_PROP_CONTENT_TYPE:
            fputs("  content type:     ", stdout);
            put_safe(stdout, k, klen, 0);
            putchar('\n');
            break;
        case MQTT_PROP_RESPONSE_TOPIC:
            fputs("  response topic:   ", stdout);
            put_safe(stdout, k, klen, 0);
            putchar('\n');
            break;
        case MQTT_PROP_CORRELATION_DATA:
            if (dlq_is_text(k, klen, 1)) {
                fputs("  correlation data: ", stdout);
                put_safe(stdout, k, klen, 0);
                putchar('\n');
            } else {
                strbuf b;
                sb_init(&b);
                dlq_base64(&b, k, klen);
                printf("  correlation data: (binary, base64) %s\n", b.p ? b.p : "");
                sb_free(&b);
            }
            break;
        case MQTT_PROP_MESSAGE_EXPIRY_INTERVAL:
            if (klen == 4) {
                uint32_t u;
                memcpy(&u, k, 4);
                printf("  message expiry:   %u s\n", u);
            }
            break;
        case MQTT_PROP_USER_PROPERTY:
            fputs("  user property:    ", stdout);
            put_safe(stdout, k, klen, 0);
            fputs(" = ", stdout);
            put_safe(stdout, v, vlen, 0);
            putchar('\n');
            break;
        default:
            printf("  property %d\n", id);
        }
    }
}

static int show_entry(const dlq_entry *e, void *arg)
{
    if (*(int *)arg) {
        strbuf b;
        sb_init(&b);
        dlq_json_entry(&b, e, 1);
        printf("%s\n", b.p ? b.p : "{}");
        sb_free(&b);
        return 0;
    }
    char when[40], ago[32];
    dlq_time_iso(e->time_ms, when, sizeof when);
    age(e->time_ms, ago, sizeof ago);
    printf("id:        %lld\ntime:      %s (%s)\nroute:     ", (long long)e->id, when, ago);
    put_safe_str(stdout, e->route);
    fputs("\ntopic:     ", stdout);
    put_safe(stdout, e->topic, e->topic_len, 0);
    printf("\nqos:       %d\nretain:    %s\nreason:    %s\nattempts:  %d\nreplays:   %d\nstate:     %s", e->qos,
           e->retain ? "yes" : "no", e->reason, e->attempts, e->replays, dlq_state_name(e->state));
    if (e->owner) {
        fputs(" (", stdout);
        put_safe_str(stdout, e->owner);
        putchar(')');
    }
    fputs("\nerror:     ", stdout);
    if (e->error) put_safe(stdout, e->error, strlen(e->error), 1);
    putchar('\n');
    show_props(e);
    char label[64];
    snprintf(label, sizeof label, "payload (%zu byte%s): ", e->payload_len, e->payload_len == 1 ? "" : "s");
    show_bytes(label, e->payload, e->payload_len);
    if (e->traceback && *e->traceback) {
        puts("traceback:");
        put_safe(stdout, e->traceback, strlen(e->traceback), 1);
        putchar('\n');
    }
    return 0;
}

static int cmd_show(dlq_store *s, const dlq_args *a, const char *path)
{
    int json = a->json;
    int rc = dlq_store_get(s, a->ids[0], show_entry, &json);
    if (rc < 0) {
        fprintf(stderr, "routemq dlq show: %s\n", dlq_store_error(s));
        return EXIT_USAGE;
    }
    if (rc == 0) {
        fprintf(stderr, "routemq dlq show: no dead letter %lld in %s\n", (long long)a->ids[0], path);
        return EXIT_USAGE;
    }
    return EXIT_OK;
}

/* --all on a terminal asks; elsewhere it needs --yes. 1 to go on. */
static int confirm(const dlq_args *a, dlq_store *s)
{
    if (a->yes) return 1;
    if (!isatty(STDIN_FILENO)) {
        fprintf(stderr, "routemq dlq %s --all: add --yes to confirm (stdin is not a terminal)\n", a->cmd);
        return 0;
    }
    dlq_filter f = { .route = a->route };
    long n = 0;
    if (dlq_store_count(s, &f, &n)) n = -1;
    fprintf(stderr, "%s %ld dead letter%s%s%s? [y/N] ", !strcmp(a->cmd, "delete") ? "Delete" : "Replay", n,
            n == 1 ? "" : "s", a->route ? " of route " : "", a->route ? a->route : "");
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 0;
    return line[0] == 'y' || line[0] == 'Y';
}

typedef int (*bulk_fn)(dlq_store *, const int64_t *, int, int, const dlq_filter *, long *);

static int found(const dlq_entry *e, void *arg)
{
    *(int *)arg = e->state;
    return 0;
}

static int cmd_bulk(dlq_store *s, const dlq_args *a, const config *cfg, const char *path)
{
    int del = !strcmp(a->cmd, "delete");
    bulk_fn fn = del ? dlq_store_delete : dlq_store_ask_replay;
    long done = 0;
    int code = EXIT_OK;
    if (a->all) {
        if (!confirm(a, s)) return EXIT_USAGE;
        dlq_filter f = { .route = a->route };
        if (fn(s, NULL, 0, 1, &f, &done)) {
            fprintf(stderr, "routemq dlq %s: %s\n", a->cmd, dlq_store_error(s));
            return EXIT_USAGE;
        }
    } else {
        for (int i = 0; i < a->nids; i++) {
            int state = -1;
            long one = 0;
            int rc = dlq_store_get(s, a->ids[i], found, &state);
            if (rc == 0) {
                fprintf(stderr, "routemq dlq %s: no dead letter %lld in %s\n", a->cmd, (long long)a->ids[i], path);
                code = EXIT_USAGE;
                continue;
            }
            if (rc < 0 || fn(s, &a->ids[i], 1, 0, NULL, &one)) {
                fprintf(stderr, "routemq dlq %s: %s\n", a->cmd, dlq_store_error(s));
                return EXIT_USAGE;
            }
            if (!del && !one)
                fprintf(stderr, "routemq dlq replay: dead letter %lld is %s already\n", (long long)a->ids[i],
                        state == DLQ_REPLAYING ? "being replayed" : "asked for replay");
            done += one;
        }
    }
    if (del) {
        printf("%ld dead letter%s deleted\n", done, done == 1 ? "" : "s");
    } else {
        printf("%ld dead letter%s asked for replay", done, done == 1 ? "" : "s");
        if (!done) putchar('\n');
        else if (instance_running(cfg)) puts("; the instance's workers take them now");
        else printf("; no instance is running for %s: they are replayed at its next start\n", cfg->app_dir);
    }
    return code;
}

int cli_dlq(int argc, char **argv)
{
    dlq_args a = { 0 };
    int code = parse(argc, argv, &a);
    if (code) {
        free(a.ids);
        return code;
    }
    config cfg;
    char err[4096];
    if (config_load(&cfg, a.app, err, sizeof err)) {
        fprintf(stderr, "routemq: %s\n", err);
        config_free(&cfg);
        free(a.ids);
        return EXIT_USAGE;
    }
    const char *path = cfg.dlq_store ? cfg.dlq_store : "(none)";
    dlq_store *s = NULL;
    if (dlq_store_open(cfg.dlq_store, 0, &s, err, sizeof err)) {
        if (errno != ENOENT) {
            fprintf(stderr, "routemq dlq %s: %s\n", a.cmd, err);
            code = EXIT_USAGE;
        } else if (!strcmp(a.cmd, "list") && a.json) {
            puts("[]");
        } else if (!strcmp(a.cmd, "list") || a.all) {
            printf("no dead letters (store %s does not exist yet)\n", path);
        } else {
            fprintf(stderr, "routemq dlq %s: no dead letter %lld (store %s does not exist yet)\n", a.cmd,
                    (long long)a.ids[0], path);
            code = EXIT_USAGE;
        }
    } else if (!strcmp(a.cmd, "list")) {
        code = cmd_list(s, &a, path);
    } else if (!strcmp(a.cmd, "show")) {
        code = cmd_show(s, &a, path);
    } else {
        code = cmd_bulk(s, &a, &cfg, path);
    }
    dlq_store_close(s);
    config_free(&cfg);
    free(a.ids);
    return code;
}
