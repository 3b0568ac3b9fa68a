"""``WebServing``: bert4keras's tiny JSON web interface, on the standard library's WSGI server.

bert4keras built it on bottle with a TF1 session; here routes are plain functions and the
server is ``wsgiref`` (no extra dependency; for testing only, as bert4keras said).
Usage is unchanged::

    web = WebServing(port=8864)
    web.route('/gen_synonyms', gen_synonyms, {'text': (None, True), 'n': (int, False)})
    web.start()   # GET http://127.0.0.1:8864/gen_synonyms?text=...

Each answer is ``{"code": 0, "desc": "succeeded", "data": ...}``; code 1 is a missing
required or unconvertible argument, 2 an exception raised by the function.
"""

import json
from urllib.parse import parse_qs


class WebServing:
    """Serve functions as JSON endpoints; ``arguments`` maps name -> (converter, required)."""

    def __init__(self, host="0.0.0.0", port=8000, server=None):
        self.host = host
        self.port = port
        self.server = server  # kept for bert4keras signatures ('paste'); wsgiref is used
        self.routes = {}

    def wraps(self, func, arguments, method="GET"):
        """A function of the request's parameter dict returning the JSON answer string."""
        for key, value in arguments.items():
            if not (isinstance(value, (tuple, list)) and len(value) == 2):
                raise ValueError(
                    "WebServing: argument %r must be declared as (converter or None, required), "
                    "got %r" % (key, value)
                )

        def answer(params):
            outputs = {"code": 0, "desc": "succeeded", "data": {}}
            kwargs = {}
            for key, (convert, required) in arguments.items():
                if key not in params:
                    if required:
                        outputs["code"] = 1
                        outputs["desc"] = 'lack of "%s" argument' % key
                        return json.dumps(outputs, ensure_ascii=False)
                    continue
                try:
                    kwargs[key] = convert(params[key]) if convert is not None else params[key]
                except (TypeError, ValueError) as exc:
                    outputs["code"] = 1
                    outputs["desc"] = 'invalid "%s" argument: %s' % (key, exc)
                    return json.dumps(outputs, ensure_ascii=False)
            try:
                outputs["data"] = func(**kwargs)
            except Exception as exc:  # reported to the client, as bert4keras did
                outputs["code"] = 2
                outputs["desc"] = str(exc)
            return json.dumps(outputs, ensure_ascii=False)

        return answer

    def route(self, path, func, arguments, method="GET"):
        """Register ``func`` under ``path`` for ``method`` ('GET' or 'POST')."""
        method = method.upper()
        if method not in ("GET", "POST"):
            raise ValueError("WebServing.route: method must be 'GET' or 'POST', got %r" % method)
        self.routes[(path, method)] = self.wraps(func, arguments, method)

    def handle(self, path, method="GET", query=""):
        """Answer one request (status, JSON text) without a socket: the WSGI app's core."""
        answer = self.routes.get((path, method.upper()))
        if answer is None:
            return "404 Not Found", json.dumps({"code": 404, "desc": "no route %s" % path})
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        return "200 OK", answer(params)

    def app(self, environ, start_response):
        """The WSGI application."""
        method = environ.get("REQUEST_METHOD", "GET")
        query = environ.get("QUERY_STRING", "")
        if method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            query = environ["wsgi.input"].read(length).decode("utf-8")
        status, body = self.handle(environ.get("PATH_INFO", "/"), method, query)
        start_response(status, [("Content-Type", "application/json; charset=utf-8")])
        return [body.encode("utf-8")]

    def start(self):
        """Serve forever on (host, port)."""
        from wsgiref.simple_server import make_server

        with make_server(self.host, self.port, self.app) as httpd:
            print("WebServing: serving on http://%s:%d" % (self.host, httpd.server_port),
                  flush=True)
            httpd.serve_forever()
