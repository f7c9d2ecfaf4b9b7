"""``medaudit web``: the online feedback and appeal portal, and its users."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import db as dbm
from ..clihelp import fail

console = Console()
err = Console(stderr=True)
DbOption = typer.Option(dbm.DEFAULT_DB, "--db", help="DuckDB database file (made by load or screen)")

app = typer.Typer(
    help="The web portal (线上反馈与申诉): hospitals appeal, reviewers decide, in the browser. "
    "`medaudit web --db FILE` starts it; `medaudit web user ...` manages its users.",
    invoke_without_command=True,
)
user_app = typer.Typer(help="Users of the portal: add, disable, enable, set a password, list.", no_args_is_help=True)
app.add_typer(user_app, name="user")


@app.callback()
def web(
    ctx: typer.Context,
    db: Path = DbOption,
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(8080, "--port", min=1, max=65535),
    files: Optional[Path] = typer.Option(
        None, "--files", help="folder for uploaded attachments (default: DB.files beside the database)"
    ),
    secure_cookie: bool = typer.Option(
        False,
        "--secure-cookie/--no-secure-cookie",
        help="send the session cookie only over HTTPS (set it when served behind TLS)",
    ),
    session_hours: float = typer.Option(8.0, "--session-hours", min=0.05, help="a sign-in lasts this long"),
    max_upload_mb: int = typer.Option(10, "--max-upload-mb", min=1, help="largest attachment"),
) -> None:
    """Start the portal on the database (Chinese pages, every asset served by the portal itself)."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from ..web import auth
    from ..web.app import create_app

    con = dbm.open_existing(db)
    auth.ensure_schema(con)
    if not auth.list_users(con):
        err.print(
            "[yellow]note:[/] no users yet: add one with `medaudit web user add NAME --role admin --db "
            f"{db}` (stop the portal first: the database has one writer)",
            highlight=False,
        )
    app_ = create_app(
        con,
        files or Path(str(db) + ".files"),
        secure_cookie=secure_cookie,
        session_hours=session_hours,
        max_upload_bytes=max_upload_mb * 1024 * 1024,
    )
    console.print(f"medaudit web on http://{host}:{port}/ (database {db})", highlight=False)
    uvicorn.run(app_, host=host, port=port, log_level="info")


def _password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


@user_app.command("add")
def user_add(
    username: str = typer.Argument(..., help="sign-in name (letters, digits, _ . @ -)"),
    role: str = typer.Option(..., "--role", help="reviewer 审核员, admin 管理员, or clerk 医院经办人员"),
    institution: Optional[str] = typer.Option(
        None, "--institution", help="a clerk's institution code (fixmedins_code)"
    ),
    name: str = typer.Option("", "--name", help="the person's name, as the audit log shows it"),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="read the password from standard input (else it is asked for twice)"
    ),
    by: str = typer.Option("", "--by", help="the administrator who adds the user"),
    db: Path = DbOption,
) -> None:
    """Add a user (the password is hashed with Argon2id; at least 10 characters)."""
    from ..web import auth

    con = dbm.open_existing(db)
    auth.ensure_schema(con)
    try:
        u = auth.add_user(con, username, role, _password(password_stdin), name, institution, by)
    except auth.UserError as e:
        fail(str(e))
    known = (
        con.execute("SELECT count(*) FROM findings WHERE fixmedins_code = ?", [u.institution]).fetchall()[0][0]
        if u.institution
        else 1
    )
    console.print(
        escape(
            f"user {u.username} ({u.display_name}) added: {u.role_cn} ({u.role})"
            + (f", institution {u.institution}" if u.institution else "")
        ),
        highlight=False,
    )
    if not known:
        console.print(
            f"[yellow]note:[/] no findings of institution {escape(u.institution or '')} in this database yet",
            highlight=False,
        )


def _set_active(username: str, active: bool, db: Path) -> None:
    from ..web import auth

    con = dbm.open_existing(db)
    auth.ensure_schema(con)
    try:
        u = auth.set_active(con, username, active)
    except auth.UserError as e:
        fail(str(e))
    console.print(f"user {u.username} {'enabled' if active else 'disabled (signed out everywhere)'}", highlight=False)


@user_app.command("disable")
def user_disable(username: str = typer.Argument(...), db: Path = DbOption) -> None:
    """Disable a user: no more sign-ins, and every open session ends now."""
    _set_active(username, False, db)


@user_app.command("enable")
def user_enable(username: str = typer.Argument(...), db: Path = DbOption) -> None:
    """Enable a disabled user again."""
    _set_active(username, True, db)


@user_app.command("password")
def user_password(
    username: str = typer.Argument(...),
    password_stdin: bool = typer.Option(False, "--password-stdin"),
    db: Path = DbOption,
) -> None:
    """Set a user's password (every open session of the user ends)."""
    from ..web import auth

    con = dbm.open_existing(db)
    auth.ensure_schema(con)
    try:
        auth.set_password(con, username, _password(password_stdin))
    except auth.UserError as e:
        fail(str(e))
    console.print(escape(f"password of {username} changed"), highlight=False)


@user_app.command("list")
def user_list(db: Path = DbOption) -> None:
    """The users, their roles and institutions."""
    from ..web import auth

    con = dbm.open_existing(db)
    auth.ensure_schema(con)
    t = Table(title="web users")
    for c in ("user", "name", "role", "institution", "active"):
        t.add_column(c)
    for u in auth.list_users(con):
        t.add_row(
            u.username, u.display_name, f"{u.role_cn} ({u.role})", u.institution or "", "yes" if u.active else "no"
        )
    console.print(t)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="web")
