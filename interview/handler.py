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
is sent from the event loop. A request to an async view (`POST /api/execute`) never waits
for those threads: it goes through the same middleware in async mode on the event loop
(`_LoopChain`), where Django would hop to a thread started for the request for each
sync-only hook (request_started, five middlewares' process_request/view/response, the
render, log_response, close: about twenty hops, 25 ms a request on this machine); here the
hooks that only read and set headers run inline, and whatever may touch the database
(the cookie session, authentication, messages) still hops as in Django.

SQLite: each pool thread opens its connection on its first request and uses it alone.
"""

import asyncio
import contextlib
import functools
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import SyncToAsync, iscoroutinefunction
from django.conf import settings
from django.core import signals
from django.core.exceptions import MiddlewareNotUsed, RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.http import FileResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import Resolver404, get_resolver, set_script_prefix, set_urlconf
from django.utils.log import log_response
from django.utils.module_loading import import_string


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


# Django's middlewares whose hooks only read the request and set headers: no I/O, no database.
_INLINE_HOOKS = (SecurityMiddleware, CommonMiddleware, CsrfViewMiddleware, XFrameOptionsMiddleware)


async def _inline_acall(middleware, request):
    """MiddlewareMixin.__acall__ with the hooks called here instead of on a thread."""
    response = None
    if hasattr(middleware, "process_request"):
        response = middleware.process_request(request)
    response = response or await middleware.get_response(request)
    if hasattr(middleware, "process_response"):
        response = middleware.process_response(request, response)
    return response


def _inline(method):
    async def call(*args):
        return method(*args)

    return call


class _LoopChain(base.BaseHandler):
    """The middleware chain and view of a request to an async view, on the event loop.

    The same MIDDLEWARE in async mode, loaded as Django loads it, except that the hooks of
    `_INLINE_HOOKS` (and the render of the view's response, and its error log) are called
    inline; every other middleware is Django's own async or hopping code, unchanged."""

    def __init__(self):
        super().__init__()
        self.load_middleware(is_async=True)

    def load_middleware(self, is_async=True):
        self._view_middleware, self._template_response_middleware, self._exception_middleware = [], [], []
        handler = convert_exception_to_response(self._get_response_async)
        for path in reversed(settings.MIDDLEWARE):
            middleware = import_string(path)
            if not getattr(middleware, "async_capable", False):
                raise TypeError(f"{path} is not async-capable: the execute view would wait for sync threads")
            try:
                instance = middleware(handler)
            except MiddlewareNotUsed:
                continue
            inline = isinstance(instance, _INLINE_HOOKS)
            adapt = _inline if inline else functools.partial(self.adapt_method_mode, True)
            if inline:
                instance.__acall__ = functools.partial(_inline_acall, instance)
            if hasattr(instance, "process_view"):
                self._view_middleware.insert(0, adapt(instance.process_view))
            if hasattr(instance, "process_template_response"):
                self._template_response_middleware.append(adapt(instance.process_template_response))
            if hasattr(instance, "process_exception"):
                self._exception_middleware.append(adapt(instance.process_exception))
            handler = convert_exception_to_response(instance)
        self._middleware_chain = handler

    async def get_response_async(self, request):
        set_urlconf(settings.ROOT_URLCONF)
        response = await self._middleware_chain(request)
        response._resource_closers.append(request.close)
        if response.status_code >= 400:
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        return response

    async def _get_response_async(self, request):
        callback, callback_args, callback_kwargs = self.resolve_request(request)
        response = None
        for method in self._view_middleware:
            response = await method(request, callback, callback_args, callback_kwargs)
            if response:
                break
        if response is None:
            if not iscoroutinefunction(callback):  # an async route's sync handler (none today)
                return await super()._get_response_async(request)
            try:
                response = await callback(request, *callback_args, **callback_kwargs)
            except Exception as exc:
                response = self.process_exception_by_middleware(exc, request)
                if response is None:
                    raise
        self.check_response(response, callback)
        if hasattr(response, "render") and callable(response.render):
            for method in self._template_response_middleware:
                response = await method(request, response)
            response = response.render()  # DRF's renderers: JSON, no I/O
        return response


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
        self.loop_chain = _LoopChain()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        if self.view_is_async(scope):
            return await self.serve_on_loop(scope, receive, send)
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            response = await self.serve_sync(scope, body_file)
        finally:
            body_file.close()
        await self.send_response(response, send)

    async def serve_on_loop(self, scope, receive, send):
        """A request to an async view, on the event loop; cancelled if the client goes away."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        response = None
        try:
            set_script_prefix(get_script_prefix(scope))
            # Its receivers reset this thread's queries and close its stale connections: the
            # loop's thread opens none (the ORM refuses to run there).
            signals.request_started.send(sender=self.__class__, scope=scope)
            request, response = self.create_request(scope, body_file)
            if request is not None:
                answer = asyncio.ensure_future(self.loop_chain.get_response_async(request))
                hangup = asyncio.ensure_future(self.listen_for_disconnect(receive))
                try:
                    await asyncio.wait((answer, hangup), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    hangup.cancel()
                    with contextlib.suppress(asyncio.CancelledError, RequestAborted):
                        await hangup
                if not answer.done():  # the client went away: stop the view (its run is killed)
                    answer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await answer
                    return
                response = answer.result()
            response._handler_class = self.__class__
            with contextlib.suppress(asyncio.CancelledError):
                await self.send_response(response, send)
        finally:
            if response is not None:
                response.close()  # request_finished: the same receivers, the same thread
            else:
                signals.request_finished.send(sender=self.__class__)
            body_file.close()

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
