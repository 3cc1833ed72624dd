"""The hub's operations view: a small web page of the live flow, served by the hub.

It shows messages per topic, consumer lag, dead letters (with a replay
button), the latest round's results per institution and a child's timeline.
It reads Kafka on its own; run it with `hub ops` or beside services with
:func:`ops_task` / :func:`serve_ops`.
"""

from hub.ops.app import create_app, ops_task, serve_ops
from hub.ops.projection import Projection

__all__ = ["Projection", "create_app", "ops_task", "serve_ops"]
