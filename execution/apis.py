"""POST /api/execute: an async view, so a running program never holds a server thread."""

from channels.db import database_sync_to_async
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle

from execution import sandbox, services
from execution.serializers import ExecutionRequestSerializer, ExecutionResultSerializer
from interview.asyncviews import AsyncAPIView
from interview.errors import ApiError
from interview.schema import error
from interview.throttling import throttles_for
from sessions.selectors import session_get


class ExecutionQueueFull(ApiError):
    def __init__(self):
        super().__init__(
            429, "RATE_LIMIT_EXCEEDED", "Too many programs are running or waiting to run; try again shortly."
        )
        self.wait = 1


class ExecuteView(AsyncAPIView):
    def get_throttles(self):
        return throttles_for("execution")

    @extend_schema(
        tags=["execution"],
        summary="Run code in the sandbox",
        description=(
            "Runs the code in a fresh sandbox (no network, no view of the server, bounded CPU, wall time, "
            "memory, processes and output). When every slot is busy the run waits its turn (fairly across "
            "sessions and addresses) up to a configured time; a full queue or a wait past that time is 429 "
            "with `Retry-After`. Compile errors, runtime errors, timeouts and limits are answered "
            "with 200 and `success: false`; `status` says which. With `sessionId`, the result is recorded in "
            "that session's history and sent to its WebSocket clients as `execution-result`."
        ),
        request=ExecutionRequestSerializer,
        responses={
            200: ExecutionResultSerializer,
            429: error("Too many programs running or queued, or the wait for a slot ran out."),
        },
        examples=[
            OpenApiExample(
                "Success",
                response_only=True,
                value={
                    "success": True,
                    "stdout": "hello Ada\n",
                    "stderr": "",
                    "exitCode": 0,
                    "executionTime": 41,
                    "error": None,
                    "status": "ok",
                    "truncated": False,
                },
            )
        ],
    )
    async def post(self, request):
        params = ExecutionRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        session_id = data.get("sessionId")
        if session_id is not None:
            await database_sync_to_async(session_get)(session_id=session_id)
        try:
            result = await services.execution_run(
                language=data["language"],
                code=data["code"],
                stdin=data["stdin"],
                timeout_s=data["timeout"],
                session_id=session_id,
                address=BaseThrottle().get_ident(request),
            )
        except sandbox.QueueFull as exc:
            raise ExecutionQueueFull() from exc
        if session_id is not None:
            await database_sync_to_async(services.execution_record)(
                session_id=session_id, language=data["language"], code=data["code"], result=result
            )
        return Response(result.as_dict())
