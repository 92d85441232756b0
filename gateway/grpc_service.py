"""The Open Inference Protocol over gRPC (Triton's ``GRPCInferenceService``), over the same data plane.

``model_name`` is an endpoint (routed by its weights) or a model; a deployment is pinned by the
``azureml-model-deployment`` metadata key or request parameter. Requests are forwarded to the node's own
gRPC service with the entry's name, so tensors are never decoded here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from gateway.auth import bearer
from gateway.dataplane import DataPlane, Resolved
from gateway.nodes import TritonNode
from gateway.routing import DEPLOYMENT_HEADER
from gateway.services import Services
from turnout.errors import GRPC_CODE_FOR_STATUS, BadInput, NodeUnreachable, TurnoutError, from_wire

log = logging.getLogger("turnout.gateway.grpc")
PIN = DEPLOYMENT_HEADER


class _Stubs:
    """One channel and stub per node, made on first use and closed with the server."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, pb_grpc.GRPCInferenceServiceStub] = {}

    def stub(self, node: TritonNode) -> pb_grpc.GRPCInferenceServiceStub:
        if node.name not in self._stubs:
            if not node.spec.grpc_url:
                raise NodeUnreachable(f"node {node.name} has no grpc_url in the nodes file")
            options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
            channel = grpc.aio.insecure_channel(node.spec.grpc_url, options=options)
            self._channels[node.name] = channel
            self._stubs[node.name] = pb_grpc.GRPCInferenceServiceStub(channel)
        return self._stubs[node.name]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


async def _abort(context: grpc.aio.ServicerContext, exc: TurnoutError) -> None:
    code = getattr(grpc.StatusCode, GRPC_CODE_FOR_STATUS.get(int(exc.status), "INTERNAL"))
    await context.abort(code, exc.message)


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, services: Services) -> None:
        self.services = services
        self.dataplane: DataPlane = services.dataplane
        self.stubs = _Stubs()

    def _resolve(self, name: str, version: str, context: grpc.aio.ServicerContext,
                 parameters: Any = None) -> Resolved:
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        credential = bearer(metadata.get("authorization"))
        if name in self.dataplane.routes.current.endpoints:
            pinned = metadata.get(PIN)
            if parameters is not None and PIN in parameters:
                pinned = parameters[PIN].string_param
            return self.dataplane.resolve_endpoint(name, pinned or None, credential)
        if version and not version.isdigit():
            raise BadInput(f"model_version must be a version number, got {version!r}")
        return self.dataplane.resolve_model(name, int(version) if version else None, credential, v2=True)

    async def _forward(self, resolved: Resolved, method: str, request: Any) -> Any:
        if method == "ModelInfer":
            def send(copy: Resolved) -> Any:
                mirrored = pb.ModelInferRequest()
                mirrored.CopyFrom(request)
                mirrored.model_name = copy.target.entry
                return self.dataplane.guarded(copy, self._caller(method, mirrored), live=False)

            self.dataplane.mirror(resolved, send)
        return await self.dataplane.guarded(resolved, self._caller(method, request))

    def _caller(self, method: str, request: Any) -> Any:
        async def call(node: TritonNode) -> Any:
            try:
                return await getattr(self.stubs.stub(node), method)(request)
            except grpc.aio.AioRpcError as exc:
                ours = from_wire(exc.details() or "")
                if ours is not None:
                    raise ours from None
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    raise NodeUnreachable(f"node {node.name} is unreachable over gRPC") from None
                raise _Passthrough(exc.code(), exc.details() or "") from None

        return call

    async def _routed(self, context: grpc.aio.ServicerContext, request: Any, method: str, name_field: str,
                      version_field: str, parameters: Any = None) -> Any:
        """Resolve the caller's name, forward under the entry's name, answer under the caller's name."""
        name = getattr(request, name_field)
        try:
            resolved = self._resolve(name, getattr(request, version_field), context, parameters)
            setattr(request, name_field, resolved.target.entry)
            setattr(request, version_field, "")
            response = await self._forward(resolved, method, request)
        except TurnoutError as exc:
            return await _abort(context, exc)
        except _Passthrough as exc:
            return await context.abort(exc.code, exc.details)
        setattr(response, name_field, name)
        if resolved.kind == "model" and version_field == "model_version" and hasattr(response, "model_version"):
            response.model_version = resolved.deployment
        if resolved.kind == "endpoint":
            await context.send_initial_metadata(((PIN, resolved.deployment),))
        return response

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._routed(context, request, "ModelInfer", "model_name", "model_version", request.parameters)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._routed(context, request, "ModelMetadata", "name", "version")

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._resolve(request.name, request.version, context)
            return pb.ModelReadyResponse(ready=True)
        except TurnoutError:
            return pb.ModelReadyResponse(ready=False)

    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.services.ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(name="turnout", version="0.1.0", extensions=["binary_tensor_data"])


# The rest of GRPCInferenceService is the node operator's, not a scorer's: say so instead of a bare
# UNIMPLEMENTED (model control goes through the control plane, which places entries on nodes).
_NOT_OFFERED = {
    "ModelConfig": "a model's config", "ModelStatistics": "statistics", "RepositoryIndex": "the repository index",
    "RepositoryModelLoad": "loading models", "RepositoryModelUnload": "unloading models",
    "SystemSharedMemoryStatus": "shared memory", "SystemSharedMemoryRegister": "shared memory",
    "SystemSharedMemoryUnregister": "shared memory", "CudaSharedMemoryStatus": "CUDA shared memory",
    "CudaSharedMemoryRegister": "CUDA shared memory", "CudaSharedMemoryUnregister": "CUDA shared memory",
    "TraceSetting": "trace settings", "LogSettings": "log settings",
}


def _not_offered(method: str, what: str) -> Any:
    async def answer(self: InferenceService, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            f"{method}: the gateway serves inference, metadata and readiness; {what} belongs to "
                            "the control plane (the gateway CLI, /admin) or to the Triton nodes themselves")
    return answer


for _method, _what in _NOT_OFFERED.items():
    setattr(InferenceService, _method, _not_offered(_method, _what))


@dataclass
class _Passthrough(Exception):
    code: grpc.StatusCode
    details: str


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    service: InferenceService
    port: int

    async def stop(self) -> None:
        await self.server.stop(grace=5)
        await self.service.stubs.close()


GRPC_IDLE_SECONDS = 300


async def start_grpc_server(services: Services, host: str, port: int) -> GrpcServer:
    settings = services.settings
    # The HTTP listener's bounds, in gRPC's terms (docs/reliability.md); idle channels are closed with a
    # GOAWAY, which gRPC clients answer by reconnecting on their next call.
    options = [("grpc.max_send_message_length", -1),
               ("grpc.max_receive_message_length", settings.max_body_bytes),
               ("grpc.max_metadata_size", settings.max_header_bytes),
               ("grpc.max_concurrent_streams", 256),
               ("grpc.max_connection_idle_ms", GRPC_IDLE_SECONDS * 1000)]
    server = grpc.aio.server(options=options)
    service = InferenceService(services)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    log.info("gRPC inference service on %s:%d", host, bound)
    return GrpcServer(server, service, bound)
