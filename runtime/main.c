/* routemq: entry point and command-line parsing. */
#include "cli.h"
#include "version.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static void usage(FILE *out)
{
    fputs("usage: routemq <command> [options]\n"
          "  run     [--app DIR] [--workers N]   run the application against MQTT_BROKER\n"
          "  dev     [--app DIR] [--workers N]   same; a private mosquitto when MQTT_BROKER is unset;\n"
          "                                      reloads on file changes\n"
          "  check   [--app DIR]                 load the routers, print the route table\n"
          "  routes  [--app DIR] [--json]        print the route table\n"
          "  status  [--app DIR] [--json]        the running master and its workers\n"
          "  status  --cluster [--json]          every instance of the group (presence records)\n"
          "  stop    [--keep-sessions | --end-sessions]  stop; keep or hand over the MQTT sessions\n"
          "  reload | stop | scale N [--app DIR] control the running master\n"
          "  test    [--app DIR] [busted options] run the application's busted specs\n"
          "  new     DIR                         create an application (routers, controllers, spec)\n"
          "  console [--app DIR]                 LuaJIT prompt with the application loaded\n"
          "  dlq     list|show|replay|delete ... the dead-letter store (routemq dlq --help)\n"
          "  version                             print the version\n", out);
}

static int parse_count(const char *opt, const char *s, int *out)
{
    char *end;
    long n = strtol(s, &end, 10);
    if (*s == 0 || *end || n < 1 || n > 1024) {
        fprintf(stderr, "routemq: %s: '%s' is not a whole number from 1 to 1024\n", opt, s);
        return -1;
    }
    *out = (int)n;
    return 0;
}

int main(int argc, char **argv, char **envp)
{
    if (argc < 2) { usage(stderr); return EXIT_USAGE; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("routemq %s\n", ROUTEMQ_VERSION);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "new")) {
        if (argc != 3 || argv[2][0] == '-') {
            fputs("routemq: usage: routemq new DIR\n", stderr);
            return EXIT_USAGE;
        }
        return cli_new(argv[2]);
    }
    if (!strcmp(cmd, "dlq")) return cli_dlq(argc - 2, argv + 2);
    cli_opts o = { .app = ".", .envp = envp, .orig_argc = argc, .orig_argv = argv };
    int is_test = !strcmp(cmd, "test");
    char **rest = calloc(argc + 1, sizeof *rest);
    if (!rest) return EXIT_USAGE;
    int nrest = 0, i = 2;
    if (!strcmp(cmd, "scale")) {
        if (argc < 3 || parse_count("scale", argv[2], &o.scale_to)) {
            if (argc < 3) fputs("routemq: usage: routemq scale N [--app DIR]\n", stderr);
            free(rest);
            return EXIT_USAGE;
        }
        i = 3;
    }
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--app") && i + 1 < argc) o.app = argv[++i];
        else if (!strncmp(a, "--app=", 6)) o.app = a + 6;
        else if (!is_test && !strcmp(a, "--workers") && i + 1 < argc) {
            if (parse_count("--workers", argv[++i], &o.workers)) { free(rest); return EXIT_USAGE; }
        } else if (!is_test && !strcmp(a, "--json")) o.json = 1;
        else if (!strcmp(cmd, "status") && !strcmp(a, "--cluster")) o.cluster = 1;
        else if (!strcmp(cmd, "stop") && !strcmp(a, "--keep-sessions")) o.sessions = 1;
        else if (!strcmp(cmd, "stop") && !strcmp(a, "--end-sessions")) o.sessions = 2;
        else if (is_test) rest[nrest++] = argv[i];
        else {
            fprintf(stderr, "routemq %s: unknown option '%s'\n", cmd, a);
            usage(stderr);
            free(rest);
            return EXIT_USAGE;
        }
    }
    o.argc = nrest;
    o.argv = rest;
    int rc;
    if (!strcmp(cmd, "check")) rc = cli_check(&o);
    else if (!strcmp(cmd, "routes")) rc = cli_routes(&o);
    else if (!strcmp(cmd, "test")) rc = cli_test(&o);
    else if (!strcmp(cmd, "run")) rc = cli_run(&o, 0);
    else if (!strcmp(cmd, "dev")) rc = cli_run(&o, 1);
    else if (!strcmp(cmd, "console")) rc = cli_console(&o);
    else if (!strcmp(cmd, "status") || !strcmp(cmd, "reload") || !strcmp(cmd, "stop") ||
             !strcmp(cmd, "scale")) rc = cli_control(&o, cmd);
    else {
        fprintf(stderr, "routemq: unknown command '%s'\n", cmd);
        usage(stderr);
        rc = EXIT_USAGE;
    }
    free(rest);
    return rc;
}
