"""Batch endpoints over HTTP: the admin verbs under ``/admin``, and Azure's REST invoke
(``POST /batch-endpoints/{e}/jobs`` with the endpoint's key or token) with ``GET /jobs/{id}``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse

from gateway.rest.deps import Admin, Batch, Credential, JSONBody, read_body
from gateway.schemas import BatchEndpointSpec, BatchEndpointUpdate, JobSpec
from turnout.errors import BadInput, UnsupportedMediaType

admin = APIRouter(prefix="/admin", tags=["batch endpoints"], dependencies=[Admin])
public = APIRouter(tags=["batch jobs"])
MAX_ARCHIVE = 2 * 1024 * 1024 * 1024


@admin.get("/batch-endpoints")
async def list_endpoints(batch: Batch) -> list[dict[str, Any]]:
    return batch.list_endpoints()


@admin.post("/batch-endpoints", status_code=201)
async def create_endpoint(spec: BatchEndpointSpec, batch: Batch) -> dict[str, Any]:
    return await batch.create_endpoint(spec)


@admin.get("/batch-endpoints/{endpoint}")
async def get_endpoint(endpoint: str, batch: Batch) -> dict[str, Any]:
    return batch.get_endpoint(endpoint)


@admin.patch("/batch-endpoints/{endpoint}")
async def update_endpoint(endpoint: str, update: BatchEndpointUpdate, batch: Batch) -> dict[str, Any]:
    return await batch.update_endpoint(endpoint, update)


@admin.delete("/batch-endpoints/{endpoint}", status_code=204)
async def delete_endpoint(endpoint: str, batch: Batch) -> Response:
    await batch.delete_endpoint(endpoint)
    return Response(status_code=204)


@admin.post("/batch-endpoints/{endpoint}/credentials")
async def get_credentials(endpoint: str, batch: Batch) -> dict[str, Any]:
    return batch.get_credentials(endpoint)


@admin.get("/batch-endpoints/{endpoint}/deployments")
async def list_deployments(endpoint: str, batch: Batch) -> list[dict[str, Any]]:
    return batch.list_deployments(endpoint)


@admin.put("/batch-endpoints/{endpoint}/deployments/{deployment}")
async def put_deployment(endpoint: str, deployment: str, request: Request, batch: Batch,
                         set_default: bool = Query(False, description="Make it the endpoint's default.")
                         ) -> dict[str, Any]:
    """Body: a gzipped tar of the package (made by `gateway batch-deployment create`)."""
    if request.headers.get("content-type", "").split(";")[0] not in ("application/gzip", "application/x-gzip"):
        raise UnsupportedMediaType("upload the deployment as application/gzip (gateway batch-deployment create does)")
    archive = await read_body(request, MAX_ARCHIVE)
    return await batch.create_or_update_deployment(endpoint, deployment, archive, set_default)


@admin.get("/batch-endpoints/{endpoint}/deployments/{deployment}")
async def get_deployment(endpoint: str, deployment: str, batch: Batch) -> dict[str, Any]:
    return batch.get_deployment(endpoint, deployment)


@admin.delete("/batch-endpoints/{endpoint}/deployments/{deployment}", status_code=204)
async def delete_deployment(endpoint: str, deployment: str, batch: Batch) -> Response:
    await batch.delete_deployment(endpoint, deployment)
    return Response(status_code=204)


@admin.get("/batch-endpoints/{endpoint}/deployments/{deployment}/logs", response_class=PlainTextResponse)
async def deployment_logs(endpoint: str, deployment: str, batch: Batch,
                          lines: int = Query(200, ge=1, le=10000)) -> str:
    return batch.logs(endpoint, deployment, lines)


@admin.get("/jobs")
async def list_jobs(batch: Batch, endpoint: str | None = None, deployment: str | None = None) -> list[dict[str, Any]]:
    return batch.list_jobs(endpoint, deployment)


@admin.post("/jobs/{job}/cancel")
async def cancel_job(job: str, batch: Batch) -> dict[str, Any]:
    return await batch.cancel_job(job)


@admin.get("/jobs/{job}/logs", response_class=PlainTextResponse)
async def job_logs(job: str, batch: Batch) -> str:
    return batch.job_logs(job)


@admin.get("/jobs/{job}/download")
async def job_download(job: str, batch: Batch) -> Response:
    """The job's outputs (``named-outputs/score/``) and logs (``logs/``), as a gzipped tar."""
    return Response(batch.job_archive(job), media_type="application/gzip")


@public.post("/batch-endpoints/{endpoint}/jobs", status_code=201)
async def invoke(endpoint: str, spec: JobSpec, batch: Batch, credential: Credential, response: Response,
                 idempotency_key: str | None = Header(None, description="Makes the submit idempotent (the job name).")
                 ) -> dict[str, Any]:
    """Start a job over the input's files (Azure's REST invoke; the endpoint's key or token, or the admin key).
    The same job name (or ``Idempotency-Key``) with the same inputs returns the existing job (200)."""
    batch.check_access(endpoint, credential)
    if idempotency_key is not None:
        if spec.job_name is not None and spec.job_name != idempotency_key:
            raise BadInput("the Idempotency-Key header and job_name differ: give one of them")
        spec = spec.model_copy(update={"job_name": JobSpec(input="-", job_name=idempotency_key).job_name})
    view, created = await batch.invoke(endpoint, spec, admin=batch.credentials.is_admin(credential))
    if not created:
        response.status_code = 200
    return view


@public.get("/jobs/{job}")
async def get_job(job: str, batch: Batch, credential: Credential) -> JSONBody:
    """A job's state and counts: for the admin key, or a credential of the job's endpoint."""
    if not batch.credentials.is_admin(credential):
        batch.check_access(batch.job_endpoint(job), credential)
    return JSONBody(batch.get_job(job))
