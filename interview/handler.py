"""The HTTP edge: Django's ASGI handler, with the sync part of a request run in one hop on
a small pool of long-lived threads whose database connections persist.

Django's `ASGIHandler` gives every request its own `ThreadSensitiveContext`, so the sync
part of each request runs on a thread started for it, which opens its own database
connection (connections are per thread: `CONN_MAX_AGE` never got to reuse one), and each
sync middleware step, the view and the signals are separate hops between the event loop
and that thread. Measured on the REST mix, that was most of the server's 7-9 ms of CPU per
request. Here a request to a sync view (every view but the async execute view) goes
through the middleware chain loaded in sync mode, the view, and the request signals in
one call on one of `HTTP_SYNC_THREADS` threads, as a WSGI server would run it; its answer
is sent from the event loop. A request to an async view goes Django's own way, untouched,
so `POST /api/execute` never waits for those threads.

SQLite: each pool thread opens its connection on its first request and uses it alone.
"""

import functools
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import SyncToAsync, iscoroutinefunction
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse
from django.urls import Resolver404, get_resolver, set_script_prefix


@functools.lru_cache(maxsize=4096)
def _path_view_is_async(path: str) -> bool:
    # Resolving costs more than the rest of the routing (25 µs), and the hot paths repeat;
    # the URLconf is the same for the process's life.
    try:
        match = get_resolver().resolve(path)
    except Resolver404:
        return False
    return iscoroutinefunction(match.func)


class _SyncChain(base.BaseHandler):
    """The middleware chain and view of a request, in sync mode (as under WSGI)."""

    def __init__(self):
        super().__init__()
        self.load_middleware(is_async=False)


async def _replayed(parts: list):
    for part in parts:
        yield part


class PooledSyncASGIHandler(ASGIHandler):
    """`ASGIHandler`, with requests to sync views served in one hop on a fixed thread pool."""

    def __init__(self, threads: int | None = None):
        super().__init__()
        self.sync_chain = _SyncChain()
        self.threads = threads or settings.HTTP_SYNC_THREADS
        self.executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="http-sync")
        self.serve_sync = SyncToAsync(self.respond, thread_sensitive=False, executor=self.executor)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.view_is_async(scope):
            return await super().__call__(scope, receive, send)
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            response = await self.serve_sync(scope, body_file)
        finally:
            body_file.close()
        await self.send_response(response, send)

    @staticmethod
    def view_is_async(scope) -> bool:
        """Whether the path's view is a coroutine (an unknown path's 404 is sync)."""
        path = scope["path"]
        prefix = get_script_prefix(scope)
        if prefix:
            path = path.removeprefix(prefix)
        return _path_view_is_async(path or "/")

    def respond(self, scope, body_file):
        """On a pool thread: the whole sync part of a request, its answer ready to send.

        What `ASGIHandler.handle` spreads over several hops (the started signal, the chain,
        closing the response, which sends the finished signal) happens here in order, on
        the thread whose database connection the request used.
        """
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.sync_chain.get_response(request)
        response._handler_class = self.__class__
        if response.streaming and not response.is_async:
            # Read here, from its file, what Django would read through another hop.
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size
            response.streaming_content = _replayed(list(response.streaming_content))
        response.close()
        return response
