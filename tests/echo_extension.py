"""A Jupyter server extension for tests: ``GET <base_url>share-test/echo`` answers (to a logged-in user, like any
Jupyter API) with the headers and cookies the server received, so a test can see what reached Jupyter."""
from __future__ import annotations

import json

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web


class Echo(APIHandler):
    @web.authenticated
    def get(self) -> None:
        self.finish(json.dumps({"headers": list(self.request.headers.get_all()),
                                "cookies": sorted(self.request.cookies), "remote_ip": self.request.remote_ip}))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "echo_extension"}]


def _load_jupyter_server_extension(serverapp) -> None:
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(".*$", [(url_path_join(base, "share-test/echo"), Echo)])
