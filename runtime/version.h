/* The version routemq reports (--version, status, routemq_build_info). The
 * build sets ROUTEMQ_VERSION from CMake's project version; this is the one
 * fallback for a build that does not. */
#ifndef ROUTEMQ_VERSION_H
#define ROUTEMQ_VERSION_H

#ifndef ROUTEMQ_VERSION
#define ROUTEMQ_VERSION "0.0.0"
#endif

#endif
