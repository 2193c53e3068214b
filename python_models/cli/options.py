"""Flags more than one command takes, declared once: where the server is."""

from __future__ import annotations

import argparse

GRPC_DEFAULT, HTTP_DEFAULT, METRICS_DEFAULT = "127.0.0.1:8001", "127.0.0.1:8000", "127.0.0.1:8002"


def host_port(value: str) -> str:
    """``HOST:PORT`` from what a user may paste: a bare address, or a URL (``http://host:8002/metrics``)."""
    return value.split("://", 1)[-1].removesuffix("/").removesuffix("/metrics").rstrip("/")


def metrics_endpoint(address: str) -> str:
    """Triton's Prometheus endpoint at ``address`` (``HOST:PORT``)."""
    return f"http://{address}/metrics"


def add_server_urls(parser: argparse.ArgumentParser, http: bool = False, metrics: bool = False,
                    several: bool = False) -> None:
    """``--grpc-url`` (repeatable with ``several``: one per server), ``--http-url``, ``--metrics-url``: each a
    ``HOST:PORT`` (a URL is accepted and reduced to it), Triton's default ports on this host unless given."""
    if several:
        parser.add_argument("--grpc-url", "--url", dest="grpc_url", type=host_port, action="append",
                            help=f"a server's gRPC address (repeat for several; default {GRPC_DEFAULT})")
    else:
        parser.add_argument("--grpc-url", type=host_port, default=GRPC_DEFAULT, help="the server's gRPC address")
    if http:
        parser.add_argument("--http-url", type=host_port, default=HTTP_DEFAULT, help="the server's HTTP address")
    if metrics:
        parser.add_argument("--metrics-url", type=host_port, default=METRICS_DEFAULT,
                            help="the server's metrics address (Prometheus endpoint /metrics)")
