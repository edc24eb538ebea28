/* Unit tests for the admin endpoint's access rules (master_auth.c): which
 * paths are open, the Bearer token, /metrics, actions without a token. */
#include "test_util.h"
#include "../master_auth.h"

#include <string.h>

#define TOKEN "0123456789abcdef0123"

int main(void)
{
    http_auth tok = { .token = TOKEN }, open_metrics = { .token = TOKEN, .metrics_open = 1 };
    http_auth none_lo = { .loopback = 1 }, none_wide = { .loopback = 0 };
    int missing;

    CHECK(http_auth_check(&tok, "/health", 0, NULL, NULL, &missing) == HTTP_ALLOW, "/health is open");
    CHECK(http_auth_check(&tok, "/ready", 0, NULL, NULL, &missing) == HTTP_ALLOW, "/ready is open");
    CHECK(http_auth_check(&tok, "/", 0, NULL, NULL, &missing) == HTTP_ALLOW, "the console page is open");
    CHECK(http_auth_check(&tok, "/status", 0, NULL, NULL, &missing) == HTTP_UNAUTHORIZED && missing,
          "/status without a token: 401 (missing)");
    CHECK(http_auth_check(&tok, "/status", 0, "Bearer " TOKEN, NULL, &missing) == HTTP_ALLOW, "/status with it");
    CHECK(http_auth_check(&tok, "/status", 0, "bearer  " TOKEN " ", NULL, &missing) == HTTP_ALLOW,
          "scheme case and spaces do not matter");
    CHECK(http_auth_check(&tok, "/status", 0, "Bearer " TOKEN "x", NULL, &missing) == HTTP_UNAUTHORIZED && !missing,
          "a longer token: 401 (wrong)");
    CHECK(http_auth_check(&tok, "/status", 0, "Bearer 0123456789abcdef012", NULL, &missing) == HTTP_UNAUTHORIZED,
          "a prefix of the token: 401");
    CHECK(http_auth_check(&tok, "/status", 0, "Basic " TOKEN, NULL, &missing) == HTTP_UNAUTHORIZED, "Basic: 401");
    CHECK(http_auth_check(&tok, "/metrics", 0, NULL, NULL, &missing) == HTTP_UNAUTHORIZED, "/metrics needs it");
    CHECK(http_auth_check(&open_metrics, "/metrics", 0, NULL, NULL, &missing) == HTTP_ALLOW,
          "/metrics open with ROUTEMQ_HTTP_METRICS=open");
    CHECK(http_auth_check(&open_metrics, "/status", 0, NULL, NULL, &missing) == HTTP_UNAUTHORIZED,
          "only /metrics is opened");
    CHECK(http_auth_check(&tok, "/health", 1, NULL, NULL, &missing) == HTTP_UNAUTHORIZED, "a POST is never open");
    CHECK(http_auth_check(&tok, "/reload", 1, "Bearer " TOKEN, "myhost:9100", &missing) == HTTP_ALLOW,
          "an action with the token, any Host");

    CHECK(http_auth_check(&none_wide, "/status", 0, NULL, NULL, &missing) == HTTP_ALLOW, "no token: reading is open");
    CHECK(http_auth_check(&none_wide, "/reload", 1, NULL, "10.0.0.1:9100", &missing) == HTTP_FORBIDDEN_ACTION,
          "no token, not loopback: actions refused");
    CHECK(http_auth_check(&none_lo, "/reload", 1, NULL, "127.0.0.1:9100", &missing) == HTTP_ALLOW,
          "no token, loopback: actions allowed");
    CHECK(http_auth_check(&none_lo, "/reload", 1, NULL, "localhost:9100", &missing) == HTTP_ALLOW, "localhost");
    CHECK(http_auth_check(&none_lo, "/reload", 1, NULL, "[::1]:9100", &missing) == HTTP_ALLOW, "[::1]");
    CHECK(http_auth_check(&none_lo, "/reload", 1, NULL, "evil.example:9100", &missing) == HTTP_FORBIDDEN_HOST,
          "no token, loopback, a DNS name as Host: refused (rebinding)");

    CHECK(http_auth_token_equal(TOKEN, strlen(TOKEN), TOKEN), "equal");
    CHECK(!http_auth_token_equal("", 0, TOKEN), "empty");
    CHECK(!http_auth_token_equal(TOKEN "\0x", strlen(TOKEN) + 2, TOKEN), "longer with a NUL");
    return TEST_SUMMARY("test_http_auth");
}
