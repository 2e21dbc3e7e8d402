#!/usr/bin/env bash
# The demo's people and their keys, for `make run`: an admin, two approvers (four eyes), an
# operator, a viewer, and broker 1400's key pair. Made once, on a database with no admin yet (the
# first admin needs no key), and kept in a file readable by you only, so that `make run` prints
# the same keys each time. A database that has an admin but not this file is left alone.
#   scripts/demo-keys.sh BKR DB KEYS_FILE
set -euo pipefail
bkr=$1 db=$2 file=$3

field() { "$(dirname "$bkr")/python" -c "import json, sys; print(json.load(sys.stdin)[\"$1\"])"; }

if [ -f "$file" ] && "$bkr" operator list --db "$db" --key "$(sed -n 's/^admin *//p' "$file")" >/dev/null 2>&1; then
  cat "$file"
  exit 0
fi
if ! added=$("$bkr" operator add admin --role admin --json --db "$db" 2>/dev/null); then
  echo "This database has an admin already, whose key is not in $file: sign in with a key you made," >&2
  echo "or start the demo afresh: rm bkr.db* $file && make run" >&2
  exit 0
fi
admin=$(field token <<<"$added")
umask 077
{
  printf 'admin     %s\n' "$admin"
  for person in alice:approver bob:approver olga:operator vera:viewer; do
    name=${person%%:*} role=${person#*:}
    token=$("$bkr" operator add "$name" --role "$role" --json --key "$admin" --db "$db" | field token)
    [ "$name" = olga ] && olga=$token
    printf '%-9s %s\n' "$name" "$token"
  done
  # broker 1400's key is made by olga, the operator: the audit trail names her
  printf 'broker    %s\n' "$("$bkr" broker key create 1400 --json --key "$olga" --db "$db" | field secret)"
} >"$file"
cat "$file"
