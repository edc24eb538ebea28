/* The command line: options shared by the commands, and one function per command. */
#ifndef ROUTEMQ_CLI_H
#define ROUTEMQ_CLI_H

enum { EXIT_OK = 0, EXIT_USAGE = 1, EXIT_UNREACHABLE = 2 };

typedef struct cli_opts {
    const char *app;        /* --app DIR, default "." */
    int workers;            /* --workers N, 0 when not given */
    int json;               /* --json */
    int scale_to;           /* scale N */
    int cluster;            /* status --cluster */
    int sessions;           /* stop --keep-sessions (1) / --end-sessions (2) */
    int argc;               /* what is left for `routemq test` (busted options) */
    char **argv;
    char **envp;            /* the process's original environment block */
    int orig_argc;
    char **orig_argv;
} cli_opts;

int cli_check(cli_opts *o);
int cli_routes(cli_opts *o);
int cli_test(cli_opts *o);
int cli_run(cli_opts *o, int dev);
int cli_control(cli_opts *o, const char *cmd);
int cli_new(const char *dir);
int cli_console(cli_opts *o);
/* routemq dlq <command> ...: argv after "dlq". */
int cli_dlq(int argc, char **argv);

#endif
