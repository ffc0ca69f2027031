"""``merc serve RUN_DIR [--host 127.0.0.1] [--port 8000] [--token TOKEN]``: the API and page of :mod:`merc.serve.app`.

Loopback by default. Binding any other address needs a token (``--token`` or the ``MERC_TOKEN`` environment
variable, which keeps it out of the shell history and the process list); without one the server refuses to start.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket

from merc.errors import ConfigError

log = logging.getLogger(__name__)

MIN_TOKEN = 16


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as e:
        raise ConfigError(f"--host {host!r}: cannot resolve it ({e}); give an address such as 127.0.0.1") from None
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def resolve_token(host: str, token: str | None) -> str | None:
    token = token or os.environ.get("MERC_TOKEN") or None
    if token is not None and len(token) < MIN_TOKEN:
        raise ConfigError(f"the token has {len(token)} characters; use at least {MIN_TOKEN}, e.g. "
                          "MERC_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    if token is None and not is_loopback(host):
        raise ConfigError(f"--host {host} is reachable from other machines; set a token (MERC_TOKEN=... or "
                          "--token ...) so that requests need 'Authorization: Bearer <token>', or keep the "
                          "default --host 127.0.0.1")
    return token


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from merc.serve.app import ServeConfig, create_app
    except ImportError as e:
        from merc.errors import MissingDependencyError
        raise MissingDependencyError(f"merc serve needs the serve extra ({e.name} is missing): "
                                     "pip install 'merc[serve]'") from None
    from merc.inference.predictor import Predictor
    token = resolve_token(args.host, args.token)
    config = ServeConfig(token=token, max_body_bytes=args.max_body_bytes, max_upload_bytes=args.max_upload_bytes,
                         max_utterances=args.max_utterances, workers=args.workers, queue=args.queue)
    predictor = Predictor.from_pretrained(args.run_dir, ensemble=args.ensemble)
    log.info("loading the encoders of %s", predictor.run.path)
    predictor.warm_up()
    log.info("streaming mode: %s (%s run)", "step" if predictor.step_mode else "prefix",
             "causal" if predictor.causal else "bidirectional")
    host = f"[{args.host}]" if ":" in args.host else args.host
    log.info("serving on http://%s:%d/ %s", host, args.port, "(token required)" if token else "")
    uvicorn.run(create_app(predictor, config), host=args.host, port=args.port,
                log_level="warning" if args.quiet else "info", proxy_headers=args.proxy_headers)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="HTTP API, live streaming and a web page over a trained run")
    p.add_argument("run_dir", help="run directory (a multi-seed run uses its dev-selected seed)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; anything but loopback needs --token or MERC_TOKEN")
    p.add_argument("--port", type=int, default=8000, help="port")
    p.add_argument("--token", default=None,
                   help="bearer token every /v1 request must carry (None: MERC_TOKEN, else no token on loopback)")
    p.add_argument("--max-utterances", type=int, default=1000, help="longest conversation or stream accepted")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="largest POST /v1/predict body")
    p.add_argument("--max-upload-bytes", type=int, default=200_000_000,
                   help="largest POST /v1/recordings upload (recording + transcript)")
    p.add_argument("--workers", type=int, default=1, help="recording jobs run at once")
    p.add_argument("--queue", type=int, default=4, help="recording jobs that may wait; more get 503")
    p.add_argument("--ensemble", action="store_true",
                   help="a multi-seed run: average all its seeds (streaming then recomputes each prefix)")
    p.add_argument("--proxy-headers", action="store_true",
                   help="trust X-Forwarded-For/-Proto from a reverse proxy on this machine")
    p.add_argument("--quiet", action="store_true", help="no request log")
    p.set_defaults(func=cmd_serve)
