#!/bin/sh
# t_exec_env.sh - an exec test function: prints its environment (the CGI
# meta-variables and the manifest env), one "NAME=value" per line, sorted,
# then "stdin: " and what it read from stdin.
printf 'Content-Type: text/plain\n'
printf 'X-Exec: 1\n'
printf '\n'
env | LC_ALL=C sort
printf 'stdin: '
cat
