"""A DRF APIView whose handlers are coroutines, so a long await never holds a thread."""

from rest_framework.views import APIView


class AsyncAPIView(APIView):
    """DRF's dispatch, awaited: parsing, checks, errors and rendering work as in any APIView.

    Handlers may be coroutines (run on the event loop) or plain functions (OPTIONS).
    """

    view_is_async = True  # Django then runs the view on the event loop, not a thread

    async def dispatch(self, request, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            self.initial(request, *args, **kwargs)
            handler = getattr(self, request.method.lower(), None)
            if handler is None or request.method.lower() not in self.http_method_names:
                handler = self.http_method_not_allowed
            response = handler(request, *args, **kwargs)
            if hasattr(response, "__await__"):
                response = await response
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response
