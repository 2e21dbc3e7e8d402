"""The exchange's statement key and signed statements: the I/O around `bkr.domain.statement_signing`.

The private key is a file holding the base64 of its 32-byte seed, readable by its owner only
(mode 0600), named by `[statements] signing_key_file` or BKR_STATEMENT_KEY_FILE. Its public
half is recorded in `statement_keys`, which is what the exchange publishes (GET
/v1/statement-keys) and what `bkr statement verify --db` checks a signature's key against.
Only a published key that is not retired signs: a statement signed by any other key would be
refused by every careful verifier, so bkr refuses to produce it.
"""

import json
import os
import stat
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, inspect, select, update

from bkr.domain.errors import InvalidInput, NotFound, StatementKeyUnavailable
from bkr.domain.statement_signing import (
    PublishedKey,
    Signature,
    StatementKey,
    Verification,
    new_statement_key,
    sign_stored,
    statement_key_from_seed,
    verify_signed_statement,
)
from bkr.store.tables import statement_keys

HOW_TO_CREATE = ("create one with `bkr statement-key create --out FILE`, then set `[statements] signing_key_file "
                 "= \"FILE\"` in the --config file or BKR_STATEMENT_KEY_FILE=FILE")


def write_key_file(path: Path, key: StatementKey) -> None:
    """Write the private key, readable by its owner only; an existing file is never overwritten."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidInput(f"--out: {path} exists; a statement key is never overwritten", field="out") from None
    except OSError as error:
        raise InvalidInput(f"--out: cannot create {path}: {error.strerror}", field="out") from None
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(key.seed + "\n")


def publish_statement_key(connection: Connection, key: StatementKey, now: datetime) -> None:
    connection.execute(insert(statement_keys).values(key_id=key.key_id, public_key=key.public_key, created_at=now))


def create_statement_key(connection: Connection, out: Path | None, now: datetime) -> tuple[StatementKey, Path]:
    """A new key pair: the private key written to `out` (default: ./statement-key-<key id>.key),
    mode 0600, and the public key published. If the database refuses the key, the file goes too."""
    key = new_statement_key()
    path = out if out is not None else Path(f"statement-key-{key.key_id}.key")
    write_key_file(path, key)
    try:
        publish_statement_key(connection, key, now)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return key, path


def published_keys(connection: Connection) -> list[PublishedKey]:
    """Every statement key the exchange has published, oldest first (retired ones included)."""
    rows = connection.execute(select(statement_keys).order_by(statement_keys.c.created_at, statement_keys.c.key_id))
    return [PublishedKey(r.key_id, r.public_key, r.created_at, r.retired_at) for r in rows]


def published_keys_if_recorded(connection: Connection) -> list[PublishedKey] | None:
    """The published keys of a database that has the table (None for one that has not: a store of
    an older bkr, or not a bkr database at all)."""
    if not inspect(connection).has_table(statement_keys.name):
        return None
    return published_keys(connection)


def retire_statement_key(connection: Connection, key_id: str, now: datetime) -> None:
    done = connection.execute(update(statement_keys).where(
        (statement_keys.c.key_id == key_id) & statement_keys.c.retired_at.is_(None)).values(retired_at=now)).rowcount
    if not done:
        raise NotFound(f"no current statement key {key_id} (bkr statement-key list)")


def load_signing_key(path: Path | None) -> StatementKey:
    """The private key in `path` (the configured signing key file)."""
    if path is None:
        raise StatementKeyUnavailable(f"no statement key is configured: {HOW_TO_CREATE}", code="statement_key_missing")
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise StatementKeyUnavailable(f"statement key file {path} does not exist; {HOW_TO_CREATE}",
                                      code="statement_key_missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise StatementKeyUnavailable(f"statement key file {path}: cannot read it ({error})") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StatementKeyUnavailable(f"statement key file {path} is open to other users (mode "
                                      f"{stat.S_IMODE(mode):04o}): chmod 600 {path}")
    try:
        return statement_key_from_seed(text)
    except InvalidInput as error:
        raise StatementKeyUnavailable(f"statement key file {path}: {error}") from None


def check_signing_key(connection: Connection, key: StatementKey) -> None:
    """Refuse to sign with a key the exchange has not published, or has retired."""
    row = connection.execute(select(statement_keys).where(statement_keys.c.key_id == key.key_id)).first()
    if row is None or row.public_key != key.public_key:
        raise StatementKeyUnavailable(f"statement key {key.key_id} is not published in this database's "
                                      "statement_keys: verifiers would refuse what it signs (bkr statement-key list)",
                                      code="statement_key_unpublished")
    if row.retired_at is not None:
        raise StatementKeyUnavailable(f"statement key {key.key_id} was retired on {row.retired_at:%Y-%m-%d}; point "
                                      "the signing key file at the current key", code="statement_key_retired")


def sign_issued(connection: Connection, stored: str, key: StatementKey) -> Signature:
    """The signature of a stored statement document, over its stored bytes, by a key the exchange
    has published and not retired."""
    check_signing_key(connection, key)
    return sign_stored(stored, key)


def read_signed_statement(path: Path) -> Any:
    """A signed statement file (`-` for standard input), parsed."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"{path}: cannot read it ({error})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"{path}: not JSON ({error})") from None
    except RecursionError:
        raise InvalidInput(f"{path}: not a signed statement (its JSON is nested too deeply)") from None


def verify_against(envelope: Any, connection: Connection | None) -> tuple[Verification, bool]:
    """Verify an envelope; with a connection whose database records statement keys, also that its
    key is one the exchange published. The flag says whether the published keys were checked."""
    published = None if connection is None else published_keys_if_recorded(connection)
    return verify_signed_statement(envelope, published), published is not None
