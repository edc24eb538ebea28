/* Commands that talk to a running master: status, reload, stop, scale.
 * Placeholder until the control socket exists. */
#include "cli.h"

#include <stdio.h>

int cli_control(cli_opts *o, const char *cmd)
{
    (void)o;
    fprintf(stderr, "routemq %s: not implemented yet\n", cmd);
    return EXIT_USAGE;
}
