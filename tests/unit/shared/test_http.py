"""HTTP plumbing: field errors named with dots, role tokens compared exactly."""

from __future__ import annotations

from shared.http import flatten_field_errors, role_for_token


def test_flatten_names_nested_fields_with_dots() -> None:
    tree = {"message": {"subject": ["Missing data."]}, "batch": {0: {"event": ["bad"]}}}
    assert flatten_field_errors(tree) == {
        "message.subject": ["Missing data."],
        "batch.0.event": ["bad"],
    }


def test_role_for_token_matches_exactly_and_ignores_empty_roles() -> None:
    tokens = {"sales": "s-token", "marketing": "m-token", "admin": ""}
    assert role_for_token("s-token", tokens) == "sales"
    assert role_for_token("m-token", tokens) == "marketing"
    assert role_for_token("", tokens) is None
    assert role_for_token("s-toke", tokens) is None


def test_gets_read_only_unless_the_view_says_it_writes(sqlite_url: str) -> None:
    """Every GET runs read-only (shared.db.reading): a view that writes on GET must say so
    with ``writes_on_get``, a function or a MethodView's ``get``; POST writes as ever."""
    from flask import Flask
    from flask.views import MethodView
    from sqlalchemy.exc import OperationalError

    from shared.db import make_engine
    from shared.http import init_api, writes_on_get

    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE hits (n INTEGER)")

    def write() -> str:
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO hits VALUES (1)")
        except OperationalError as exc:
            return f"refused: {exc.orig}"
        return "written"

    app = Flask(__name__)
    init_api(app, title="test")
    app.get("/plain")(write)
    app.post("/plain")(write)
    app.get("/marked", endpoint="marked")(writes_on_get(lambda: write()))

    class Marked(MethodView):
        @writes_on_get
        def get(self) -> str:
            return write()

    app.add_url_rule("/class", view_func=Marked.as_view("marked_class"))
    client = app.test_client()
    assert client.get("/plain").text == "refused: attempt to write a readonly database"
    assert client.post("/plain").text == "written"
    assert client.get("/marked").text == "written"
    assert client.get("/class").text == "written"
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM hits").scalar() == 3
