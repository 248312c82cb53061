"""Personal accounts: every person signs in as themselves.

An account is a person with a role (``admin`` or ``marketing``; sales reps have theirs in
lead-scoring) and a personal token: random, shown once when issued, stored as its
SHA-256 only; rotating replaces it, revoking ends it. Each service keeps its own
accounts, as it keeps its own database: an admin of the whole funnel holds a token from
each service. ``pii`` lets a marketing account see e-mails and phones unmasked.

Managed through the admin API (:func:`blueprint`: ``/admin/accounts``) or the CLI
(:data:`cli`: ``python -m services.<name> accounts add|list|rotate|revoke``). Every
change is in the audit log. The shared role tokens stay for development and machines
and can be turned off (``FUNNEL_ROLE_TOKENS=off``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from typing import Any

import click
import marshmallow as ma
from flask.views import MethodView
from marshmallow import fields, validate
from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    MetaData,
    String,
    Table,
    select,
    update,
)
from sqlalchemy.engine import Connection

from shared.audit import audited
from shared.db import BigIntPK, UTCDateTime, utcnow
from shared.fields import Name
from shared.http import Blueprint, Principal, fail, require_role
from shared.limits import MAX_EMAIL_LENGTH

PREFIX = "fpa_"  # funnel personal account: tells a personal token from a role token
ROLES = ("admin", "marketing")


def accounts_table(metadata: MetaData) -> Table:
    return Table(
        "accounts",
        metadata,
        Column("id", BigIntPK, primary_key=True, autoincrement=True),
        Column("name", String(200), nullable=False),
        Column("email", String(MAX_EMAIL_LENGTH), nullable=False, unique=True),
        Column("role", String(20), nullable=False),
        Column("pii", Boolean, nullable=False, default=False),
        Column("token_hash", String(64), nullable=True, unique=True),
        Column("token_issued_at", UTCDateTime(), nullable=True),
        Column("created_at", UTCDateTime(), nullable=False, default=utcnow),
        Column("created_by", String(200), nullable=False),
    )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> tuple[str, str]:
    token = PREFIX + secrets.token_urlsafe(32)
    return token, token_hash(token)


def public(row: Any) -> dict[str, Any]:
    """An account as the API shows it (never the token, nor its hash)."""
    return {
        "id": row.id,
        "name": row.name,
        "email": row.email,
        "role": row.role,
        "pii": row.pii,
        "active": row.token_hash is not None,
        "token_issued_at": row.token_issued_at,
        "created_at": row.created_at,
        "created_by": row.created_by,
    }


def create(
    conn: Connection, table: Table, *, name: str, email: str, role: str, pii: bool, by: str
) -> tuple[dict[str, Any], str]:
    """A new account and its first token (returned once). ``ValueError`` for an unknown
    role or an e-mail already used."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    email = email.strip().lower()
    if conn.scalar(select(table.c.id).where(table.c.email == email)) is not None:
        raise ValueError(f"an account for {email} exists")
    token, hashed = _new_token()
    now = utcnow()
    inserted = conn.execute(
        table.insert().values(
            name=name,
            email=email,
            role=role,
            pii=pii,
            token_hash=hashed,
            token_issued_at=now,
            created_at=now,
            created_by=by,
        )
    ).inserted_primary_key
    assert inserted is not None
    account_id = inserted[0]
    return public(conn.execute(select(table).where(table.c.id == account_id)).one()), token


def rotate(conn: Connection, table: Table, account_id: int) -> str | None:
    """A new token for the account (the old one stops working now); None if unknown."""
    token, hashed = _new_token()
    result = conn.execute(
        update(table)
        .where(table.c.id == account_id)
        .values(token_hash=hashed, token_issued_at=utcnow())
    )
    return token if result.rowcount else None


def revoke(conn: Connection, table: Table, account_id: int) -> bool:
    result = conn.execute(
        update(table).where(table.c.id == account_id).values(token_hash=None, token_issued_at=None)
    )
    return bool(result.rowcount)


def set_pii(conn: Connection, table: Table, account_id: int, pii: bool) -> bool:
    result = conn.execute(update(table).where(table.c.id == account_id).values(pii=pii))
    return bool(result.rowcount)


def principal(conn: Connection, table: Table, token: str) -> Principal | None:
    """Whose personal token this is; None for anything else. Looked up by hash."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    row = conn.execute(select(table).where(table.c.token_hash == token_hash(token))).first()
    if row is None:
        return None
    return Principal(role=row.role, person_id=row.id, name=row.name, pii=row.pii)


def resolver(engine: Engine, table: Table) -> Callable[[str], Principal | None]:
    def resolve(token: str) -> Principal | None:
        with engine.connect() as conn:
            return principal(conn, table, token)

    return resolve


def current_hash(conn: Connection, table: Table, account_id: int) -> str | None:
    """The account's token hash now (page sessions are bound to it)."""
    return conn.scalar(select(table.c.token_hash).where(table.c.id == account_id))


# ------------------------------------------------------------------------------ HTTP


class AccountIn(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    name = Name(required=True, max_length=200)
    email = fields.Email(required=True, validate=validate.Length(max=MAX_EMAIL_LENGTH))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    pii = fields.Boolean(load_default=False)


class AccountPatch(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    pii = fields.Boolean(required=True)


class AccountOut(ma.Schema):
    id = fields.Integer()
    name = fields.String()
    email = fields.String()
    role = fields.String()
    pii = fields.Boolean()
    active = fields.Boolean(metadata={"description": "has a token that works"})
    token_issued_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    created_by = fields.String()


class AccountWithToken(AccountOut):
    token = fields.String(metadata={"description": "shown this once; stored only hashed"})


class AccountList(ma.Schema):
    items = fields.List(fields.Nested(AccountOut))


def blueprint(state: Callable[[], tuple[Engine, Table]]) -> Blueprint:
    """``/admin/accounts`` for a service whose accounts live in ``state()``."""
    blp = Blueprint("accounts", __name__, url_prefix="/admin/accounts", description="Accounts")

    def one(account_id: int) -> dict[str, Any]:
        engine, table = state()
        with engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.id == account_id)).first()
        if row is None:
            fail(404, f"no account {account_id}")
        return public(row)

    def target(_result: Any, account_id: int | None = None, **_: Any) -> str:
        if account_id is None and isinstance(_result, dict):
            account_id = _result.get("id")
        return f"account:{account_id}"

    @blp.route("")
    class AccountsView(MethodView):
        @require_role("admin")
        @blp.response(200, AccountList)
        def get(self) -> dict[str, Any]:
            """Every account (never a token)."""
            engine, table = state()
            with engine.connect() as conn:
                rows = conn.execute(select(table).order_by(table.c.id)).all()
            return {"items": [public(r) for r in rows]}

        @require_role("admin")
        @blp.arguments(AccountIn)
        @blp.response(201, AccountWithToken)
        @audited("account.create", target=target)
        def post(self, data: dict[str, Any]) -> dict[str, Any]:
            """Create a person's account; its token is in this answer only."""
            from shared.http import current_principal

            engine, table = state()
            try:
                with engine.begin() as conn:
                    account, token = create(
                        conn, table, **data, by=current_principal().name or "admin"
                    )
            except ValueError as exc:
                fail(409, str(exc), errors={"email": ["taken"]})
            return {**account, "token": token}

    @blp.route("/<id:account_id>")
    class AccountView(MethodView):
        @require_role("admin")
        @blp.arguments(AccountPatch)
        @blp.response(200, AccountOut)
        @audited("account.pii", target=target, before=lambda account_id: one(account_id))
        def patch(self, data: dict[str, Any], account_id: int) -> dict[str, Any]:
            """Grant or withdraw unmasked e-mails and phones."""
            engine, table = state()
            with engine.begin() as conn:
                set_pii(conn, table, account_id, data["pii"])
            return one(account_id)

    @blp.route("/<id:account_id>/token")
    class TokenView(MethodView):
        @require_role("admin")
        @blp.response(201, AccountWithToken)
        @audited("account.rotate", target=target)
        def post(self, account_id: int) -> dict[str, Any]:
            """A new token (shown once); the old one stops working now."""
            engine, table = state()
            with engine.begin() as conn:
                token = rotate(conn, table, account_id)
            if token is None:
                fail(404, f"no account {account_id}")
            return {**one(account_id), "token": token}

        @require_role("admin")
        @blp.response(204)
        @audited("account.revoke", target=target, before=lambda account_id: one(account_id))
        def delete(self, account_id: int) -> None:
            """Revoke the token: the account can no longer sign in."""
            engine, table = state()
            with engine.begin() as conn:
                if not revoke(conn, table, account_id):
                    fail(404, f"no account {account_id}")

    return blp


# ------------------------------------------------------------------------------- CLI


def cli(engine_of: Callable[[Any], Engine], table: Table) -> click.Group:
    """``accounts add|list|rotate|revoke`` for a service (its config → its engine)."""

    @click.group("accounts", help="Personal accounts (tokens shown once, stored hashed).")
    @click.pass_context
    def group(ctx: click.Context) -> None:
        ctx.ensure_object(dict)

    def engine(ctx: click.Context) -> Engine:
        return engine_of(ctx.obj["config"])

    @group.command("add")
    @click.option("--name", required=True)
    @click.option("--email", required=True)
    @click.option("--role", type=click.Choice(ROLES), required=True)
    @click.option("--pii/--no-pii", default=False, help="may see e-mails and phones")
    @click.pass_context
    def add(ctx: click.Context, name: str, email: str, role: str, pii: bool) -> None:
        with engine(ctx).begin() as conn:
            try:
                account, token = create(
                    conn, table, name=name, email=email, role=role, pii=pii, by="cli"
                )
            except ValueError as exc:
                raise click.ClickException(str(exc)) from exc
            _cli_audit(conn, "account.create", account)
        click.echo(f"account {account['id']} ({role}): token {token}  (shown once)")

    @group.command("list")
    @click.pass_context
    def list_(ctx: click.Context) -> None:
        with engine(ctx).connect() as conn:
            for row in conn.execute(select(table).order_by(table.c.id)):
                state = "active" if row.token_hash else "revoked"
                click.echo(f"{row.id}\t{row.role}\t{row.email}\t{state}\tpii={row.pii}")

    @group.command("rotate")
    @click.argument("account_id", type=int)
    @click.pass_context
    def rotate_(ctx: click.Context, account_id: int) -> None:
        with engine(ctx).begin() as conn:
            token = rotate(conn, table, account_id)
            if token is None:
                raise click.ClickException(f"no account {account_id}")
            _cli_audit(conn, "account.rotate", {"id": account_id})
        click.echo(f"account {account_id}: new token {token}  (shown once)")

    @group.command("revoke")
    @click.argument("account_id", type=int)
    @click.pass_context
    def revoke_(ctx: click.Context, account_id: int) -> None:
        with engine(ctx).begin() as conn:
            if not revoke(conn, table, account_id):
                raise click.ClickException(f"no account {account_id}")
            _cli_audit(conn, "account.revoke", {"id": account_id})
        click.echo(f"account {account_id}: revoked")

    def _cli_audit(conn: Connection, action: str, after: dict[str, Any]) -> None:
        audit = table.metadata.tables.get("audit_log")
        if audit is not None:
            from shared.audit import record

            record(
                conn,
                audit,
                action=action,
                target=f"account:{after['id']}",
                before=None,
                after=after,
                actor_role="cli",
                actor="cli",
            )

    return group


def install(
    app: Any,
    api: Any,
    engine: Engine,
    accounts: Table,
    audit_log: Table,
    others: Callable[[str], Principal | None] | None = None,
) -> None:
    """A service's people: personal tokens resolved (accounts first, then ``others``,
    e.g. lead-scoring's reps), ``/admin/accounts`` and ``/admin/audit`` mounted, and the
    audit log where :func:`shared.audit.audited` writes."""
    from shared import audit
    from shared.http import PERSON_TOKENS

    audit.install(app, engine, audit_log)
    own = resolver(engine, accounts)

    def resolve(token: str) -> Principal | None:
        found = own(token)
        if found is None and others is not None:
            found = others(token)
        return found

    app.extensions[PERSON_TOKENS] = resolve
    api.register_blueprint(blueprint(lambda: (engine, accounts)))
    api.register_blueprint(audit.blueprint())
