#!/bin/sh
# echo - an exec function: a CGI/1.1 program (RFC 3875) run once per call.
#
#   curl -d 'some body' 'http://127.0.0.1:8080/fn/echo/a/b?x=1'
#   method: POST
#   path: /a/b
#   query: x=1
#   body: some body
#
# The request arrives as environment variables (REQUEST_METHOD, PATH_INFO,
# QUERY_STRING, CONTENT_LENGTH, HTTP_*) with the body on stdin; stdout is a
# header block, an empty line, then the response body.
printf 'Status: 200 OK\r\n'
printf 'Content-Type: text/plain; charset=utf-8\r\n'
printf 'X-Echo-Method: %s\r\n' "$REQUEST_METHOD"
printf '\r\n'
printf 'method: %s\n' "$REQUEST_METHOD"
printf 'path: %s\n' "$PATH_INFO"
printf 'query: %s\n' "$QUERY_STRING"
printf 'body: '
if [ "${CONTENT_LENGTH:-0}" -gt 0 ]; then
    cat
fi
