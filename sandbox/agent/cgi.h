/* cgi.h - CGI/1.1 (RFC 3875) and HTTP header rules of ember-agent.
 *
 * Pure functions over buffers, without I/O, so that tests/unit can reach
 * them: the request meta-variables an exec handler gets in its environment,
 * the header block it may print before its body, and the header checks the
 * native SDK shares.
 */
#ifndef EMBER_AGENT_CGI_H
#define EMBER_AGENT_CGI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sandbox/proto.h"

#define CGI_HEADER_BLOCK_MAX (64u << 10) /* bytes of an exec handler's header block */
#define CGI_HEADERS_MAX 100              /* header lines in that block */

/** Request header emberd may add for REMOTE_ADDR; never exported as HTTP_*. */
#define CGI_REMOTE_ADDR_HEADER "X-Ember-Remote-Addr"

/** What the agent adds to a request to describe the server side. */
struct cgi_server {
    const char *function; /* SCRIPT_NAME is "/fn/<function>" */
    const char *software; /* SERVER_SOFTWARE, e.g. "ember/1" */
};

/** An exec handler's output, split; every pointer borrows from the buffer
 *  given to agent__cgi_parse. */
struct cgi_output {
    int status;
    uint32_t n_headers;
    struct proto_pair headers[CGI_HEADERS_MAX];
    const char *body;
    size_t body_len;
};

/**
 * Build the environment of one exec call: the RFC 3875 meta-variables of
 * @req, then every entry of @base (NULL-terminated "K=V" strings, may be
 * NULL) whose name is not a meta-variable. Request headers become HTTP_*
 * (upper case, '-' as '_', repeats joined with ", ") except Content-Type and
 * Content-Length (CONTENT_*), Proxy (httpoxy), names holding '_' (they would
 * alias '-' names) and values holding NUL. On success *out is a
 * NULL-terminated array owned by the caller (agent__cgi_env_free).
 * Returns 0 or -ENOMEM.
 */
int agent__cgi_env_build(const struct cgi_server *srv, const struct proto_request *req,
                         char *const *base, char ***out);

/** Free what agent__cgi_env_build returned; NULL is fine. */
void agent__cgi_env_free(char **env);

/** The value of @name in a NULL-terminated environment, or NULL. */
const char *agent__cgi_env_get(char *const *env, const char *name);

/**
 * Split an exec handler's stdout into status, headers and body. Without a
 * header block (the first line is not "token: value") all of @buf is the body
 * with status 200. Otherwise the block ends at the first empty line (LF or
 * CRLF); "Status: NNN reason" sets the status, "Location" without a Status
 * gives 302, hop-by-hop headers and Content-Length are dropped, the rest pass
 * through. A block that is not closed, too long, or holds a malformed line
 * fails with -EBADMSG and a reason in @why.
 */
int agent__cgi_parse(const char *buf, size_t len, struct cgi_output *out, char *why,
                     size_t why_len);

/** Is @s (@len bytes) an HTTP token (RFC 9110 tchar+)? */
bool agent__http_token_valid(const char *s, size_t len);

/** May @s (@len bytes) be a header value: no CTL but HTAB, so no CR/LF/NUL? */
bool agent__http_value_valid(const char *s, size_t len);

/** Is @name a header the response must not carry through: hop-by-hop
 *  (Connection, Keep-Alive, Transfer-Encoding, TE, Trailer, Upgrade,
 *  Proxy-*) or Content-Length (the gateway frames the body itself)? */
bool agent__http_header_dropped(const char *name, size_t len);

#endif
