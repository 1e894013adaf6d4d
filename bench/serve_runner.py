"""A server for the serving scenario, as the daemon runs its web part (uvicorn, one process).

python -m bench.serve_runner app --config DIR --port P       the real app (aggregator.web)
python -m bench.serve_runner trivial --body FILE --headers FILE --port P
                                                              one Starlette endpoint that
                                                              returns the same bytes
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import uvicorn


def real_app(config_dir: str) -> Any:
    from aggregator.config import load_config
    from aggregator.store import Store
    from aggregator.web import AppState, create_app

    config = load_config(config_dir)
    store = Store(config.settings.database)
    store.upgrade()
    return create_app(AppState(config=config, store=store, role="web"))


def trivial_app(body: bytes, headers: dict[str, str]) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    media_type = headers.pop("content-type", "application/atom+xml; charset=utf-8")

    async def endpoint(request: Request) -> Response:
        return Response(body, media_type=media_type, headers=headers)

    return Starlette(routes=[Route("/topics/{name}", endpoint)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("app", "trivial"))
    parser.add_argument("--config")
    parser.add_argument("--body")
    parser.add_argument("--headers")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.kind == "app":
        app = real_app(args.config)
    else:
        app = trivial_app(
            Path(args.body).read_bytes(), json.loads(Path(args.headers).read_text("utf-8"))
        )
    # the daemon's own uvicorn settings (aggregator/daemon.py)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=args.port, log_config=None, access_log=False, lifespan="off"
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
