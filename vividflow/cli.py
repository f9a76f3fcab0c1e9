"""The ``vividflow`` command: serve the API, manage keys, users and the database, run the runner."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Annotated

import typer

from vividflow.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

app = typer.Typer(help="Vivid Flow: image + prompt -> video.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the database.", no_args_is_help=True)
users_app = typer.Typer(help="Manage web app users.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the API (embedded mode unless VIVID_BACKEND says otherwise)."""
    from vividflow.apiserver.server import serve as serve_api

    serve_api(get_settings(), host, port)


@app.command()
def crd() -> None:
    """Print the VideoJob CustomResourceDefinition (crds/videojob.yaml)."""
    from vividflow.crd import render

    typer.echo(render(), nl=False)


@app.command()
def operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace", "-n", help="Serve this namespace (repeatable); default VIVID_KUBE_NAMESPACE."
        ),
    ] = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", help="Serve every namespace.")] = False,
    liveness: Annotated[
        str | None, typer.Option(help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz.")
    ] = None,
    standalone: Annotated[
        bool, typer.Option("--standalone", help="Run alone, without peering (the default).")
    ] = False,
    peering: Annotated[
        str | None, typer.Option(help="Take turns with other replicas through this KopfPeering object.")
    ] = None,
    priority: Annotated[
        int | None, typer.Option(help="Peering priority (default: derived from the host name).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Reconcile worker threads.")] = 8,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Serve Prometheus metrics on this port (0: off; default 9090)."),
    ] = None,
) -> None:
    """Run the VideoJob operator (kopf): VideoJobs -> runner Jobs -> VideoJob status."""
    from vividflow.operator.main import run

    settings = get_settings()
    if peering is not None and standalone:
        raise typer.BadParameter("--standalone and --peering exclude each other")
    namespaces = [] if all_namespaces else (namespace or [settings.kube_namespace])
    run(
        settings,
        namespaces=namespaces,
        liveness=liveness,
        peering=peering,
        priority=priority,
        workers=workers,
        verbose=verbose,
        metrics_port=settings.operator_metrics_port if metrics_port is None else metrics_port,
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all database migrations."""
    from vividflow.apiserver.db.migrate import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    typer.echo("database is up to date")


@app.command()
def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the jobs and files that would go; delete nothing.")
    ] = False,
    days: Annotated[
        float | None,
        typer.Option(min=0, help="Retention in days instead of VIVID_RESULT_RETENTION_DAYS (0 keeps all)."),
    ] = None,
) -> None:
    """Delete the inputs and results of jobs that ended longer ago than the retention (as the server
    does every VIVID_RETENTION_INTERVAL_SECONDS); the jobs themselves stay."""
    from vividflow.apiserver.clock import iso
    from vividflow.apiserver.db.migrate import upgrade
    from vividflow.apiserver.db.session import make_engine, make_session_factory
    from vividflow.apiserver.services import retention

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    try:
        factory = make_session_factory(engine)
        if dry_run:
            count = 0
            for batch in retention.due_jobs(factory, settings, days):
                for job in batch:
                    count += 1
                    files = ", ".join(retention.describe(target) for target in job.targets)
                    typer.echo(f"{job.job_id}  ended {iso(job.ended_at)}  {files or '(nothing stored)'}")
            typer.echo(f"would delete the inputs and results of {count} jobs")
            return
        outcome = retention.expire(factory, settings, days=days)
    finally:
        engine.dispose()
    typer.echo(f"deleted the inputs and results of {outcome.expired} jobs")
    if outcome.failed:
        failed = ", ".join(outcome.failed)
        typer.echo(
            f"could not delete the files of {len(outcome.failed)} jobs (kept for the next run): {failed}",
            err=True,
        )
        raise typer.Exit(1)


def _session() -> AbstractContextManager[Session]:
    """A transaction on the configured database, migrated first."""
    from vividflow.apiserver.db.migrate import upgrade
    from vividflow.apiserver.db.session import make_engine, make_session_factory

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    return make_session_factory(make_engine(settings.resolved_database_url)).begin()


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option(help="The user's email; created if new.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "default",
) -> None:
    """Create an API key; the key is printed once, on the last line."""
    from vividflow.apiserver.services import keys

    problem = keys.key_name_problem(name)
    if problem is not None:
        raise typer.BadParameter(problem, param_hint="--name")
    try:
        with _session() as session:
            owner = keys.get_or_create_user(session, user)
            created = keys.create_key(session, owner, name, max_keys=get_settings().max_keys_per_user)
            key_id = created.key.id
    except keys.TooManyKeys as error:
        typer.echo(f"{user} already has {error.limit} active API keys; revoke one first.", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Created API key {key_id} ({name}) for {user}. Store it now; it is not shown again:")
    typer.echo(created.secret)


@keys_app.command("list")
def keys_list(user: Annotated[str | None, typer.Option(help="Only this user's keys.")] = None) -> None:
    """List keys (never the keys themselves: only their first characters)."""
    from vividflow.apiserver.services import keys

    with _session() as session:
        rows = [(key, email) for key, email in keys.list_all_keys(session) if user in (None, email)]
        for key, email in rows:
            state = "revoked" if key.revoked_at else "active"
            typer.echo(f"{key.id}  {key.prefix}…  {state:7}  {email}  {key.name}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (from `keys list`).")]) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from vividflow.apiserver.db.models import ApiKey
    from vividflow.apiserver.services import keys

    with _session() as session:
        key = session.get(ApiKey, key_id)
        if key is None:
            typer.echo(f"no API key with id {key_id}", err=True)
            raise typer.Exit(1)
        keys.revoke_key(session, key)
    typer.echo(f"revoked {key_id}")


@users_app.command("set-password")
def users_set_password(
    email: Annotated[str, typer.Argument(help="The user's email.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input (scripts).")
    ] = False,
) -> None:
    """Give a user a password for the web app (or a new one); their web sessions end."""
    from vividflow.apiserver.services import accounts, web_sessions

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    try:
        accounts.check_password_policy(password, email)
    except accounts.PasswordRefused as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    with _session() as session:
        user = accounts.find_user(session, email)
        if user is None:
            typer.echo(f"no user with email {email} (make one: `vividflow keys create --user`)", err=True)
            raise typer.Exit(1)
        accounts.set_password(session, user, password)
        ended = web_sessions.end_all(session, user.id)
    typer.echo(f"password set for {user.email}; {ended} web session(s) ended")


def _add_client_commands() -> None:
    """`vividflow generate/status/cancel/history`: the client of any server's public API."""
    from vividflow.client.commands import register

    register(app)


_add_client_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
