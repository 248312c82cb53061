"""What web pages load from intake, without a key check of their own: the first-party
tracking script and the settings a Segment browser SDK asks for.

* ``GET /v1/funnel.js`` — Funnel's tracking script (``static/funnel.js``: dependency-free;
  what it does is in its header). A site pastes :func:`snippet` into its pages.
* ``GET /v1/projects/<writeKey>/settings`` — the settings ``@segment/analytics-next``
  loads before it sends (``AnalyticsBrowser.load({writeKey, cdnURL: <intake>})``): they
  point its ``Segment.io`` destination at this intake (``apiHost`` ``<host>/v1``), turn
  its metrics off and enable no other destination. Only for a browser source's key, and
  readable (CORS) only from that source's origins; any other key is 404.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from flask import Blueprint, Response, abort, request
from sqlalchemy.exc import SQLAlchemyError

from services.traffic_intake.origins import normal_origin
from services.traffic_intake.state import state
from shared.provenance import BROWSER

bp = Blueprint("browser", __name__)
SCRIPT = resources.files("services.traffic_intake").joinpath("static/funnel.js").read_bytes()


def snippet(write_key: str, intake_url: str) -> str:
    """The few lines a site pastes into every page (before ``</head>``): calls made before
    the script loads are queued and replayed in order."""
    host = intake_url.rstrip("/")
    return (
        "<script>\n"
        "!function(w,d,k,h){var f=w.funnel=w.funnel||[];if(f.ready||f.loading)return;"
        "f.loading=1;['page','track','identify','group','alias','consent','reset']"
        ".forEach(function(m){f[m]=function(){f.push([m].concat([].slice.call(arguments)))}});"
        "f.writeKey=k;f.host=h;var s=d.createElement('script');s.async=1;"
        "s.src=h+'/v1/funnel.js';d.head.appendChild(s)}"
        f"(window,document,{json.dumps(write_key)},{json.dumps(host)});\n"
        "</script>"
    )


@bp.get("/v1/funnel.js")
def script() -> Response:
    response = Response(SCRIPT, mimetype="application/javascript")
    response.headers["Cache-Control"] = "public, max-age=3600"
    response.headers["Access-Control-Allow-Origin"] = "*"  # a public, static file
    return response


@bp.get("/v1/projects/<write_key>/settings")
def settings(write_key: str) -> Response:
    try:
        source = state().sources.lookup(write_key[:200])
    except SQLAlchemyError:
        abort(503)
    if source is None or not source.enabled or source.kind != BROWSER:
        abort(404)
    document: dict[str, Any] = {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": f"{request.host}/v1",
                "protocol": request.scheme,
                "unbundledIntegrations": [],
                "addBundledMetadata": False,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {"track": {"__default": {"enabled": True, "integrations": {}}}},
        "metrics": {"sampleRate": 0},
        "enabledMiddleware": {},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }
    response = Response(json.dumps(document), mimetype="application/json")
    origin = request.headers.get("Origin")
    if origin is not None and normal_origin(origin) in source.origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response
