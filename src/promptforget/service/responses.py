"""What the service answers: one pydantic model per route (the OpenAPI schema), and the error codes
each route documents. Models that mirror a record of the store (forget result, verify report) allow
extra fields, so a field added there reaches clients without a change here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    detail: str = Field(..., description="what went wrong, in one line")


class ClassProbability(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    class_name: str = Field(..., alias="class")
    probability: float


class Prediction(BaseModel):
    label: str = Field(..., description="the most probable class")
    probability: float
    top: list[ClassProbability] = Field(..., description="the top_k classes, most probable first")


class PredictResponse(BaseModel):
    predictions: list[Prediction] = Field(..., description="one per input, in order")
    generation: int = Field(..., description="the prompt bank generation the prediction read (RCU)")


class ClassesResponse(BaseModel):
    classes: list[str] = Field(..., description="every class the model was trained with")
    active: list[str] = Field(..., description="classes whose prompts exist")
    forgotten: list[str] = Field(..., description="classes whose prompts were deleted")
    mask_forgotten: bool = Field(..., description="forgotten classes are masked in the head (never predicted)")


class ForgetResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    request_id: str
    classes: list[str]
    reason: str
    replayed: bool = Field(..., description="the request id was already committed; nothing changed")
    ledger_seq: int = Field(..., description="seq of the ledger's commit entry")
    committed_at: str
    artefact_before_sha256: str
    artefact_after_sha256: str
    removed_prompt_sha256: dict[str, str] = Field(..., description="class -> sha256 of the deleted prompt's bytes")
    active_classes: list[str]
    forgotten_classes: list[str]
    recovery: dict[str, Any] | None = Field(None, description="a crashed forget resolved first, if any")
    timings_ms: dict[str, float] = Field(default_factory=dict)
    state: str = Field("instant", description="instant (prompt deleted) | retraining (an exact forget is running) "
                       "| exact (retrained without the class's data)")
    exact_requested: bool = Field(False, description="an exact forget was asked for")
    examples: list[str] = Field(default_factory=list, description="keyed hashes of the forgotten examples' ids")
    exact_at_commit: bool = Field(False, description="analytic runs: the committed artefact already equals a retrain "
                                  "without the forgotten data")


class ForgetState(BaseModel):
    request_id: str
    classes: list[str]
    state: str = Field(..., description="instant | retraining | exact")
    exact_requested: bool
    examples: int = Field(0, description="how many single examples the request forgot")
    commit_seq: int = Field(..., description="seq of the ledger's commit entry (the instant forget)")
    exact_seq: int | None = Field(None, description="seq of the ledger's exact entry, once retrained")


class LedgerPage(BaseModel):
    entries: list[dict[str, Any]] = Field(..., description="ledger entries (pending, commit, abort), by seq")
    count: int = Field(..., description="entries on this page")
    total: int = Field(..., description="entries in the ledger")
    head_sha256: str | None = Field(..., description="hash of the last entry (null for an empty ledger)")


class VerifyReport(BaseModel):
    model_config = ConfigDict(extra="allow")
    ok: bool
    problems: list[str] = Field(..., description="each names the ledger line and the field")
    authenticated: bool = Field(..., description="every entry's HMAC checked with the ledger key")
    signed: bool
    key_id: str | None
    entries: int
    commits: int
    head_seq: int
    head_sha256: str
    active_classes: list[str]
    forgotten_classes: list[str]
    artefact_sha256: str
    run_dir: str
    ledger: str
    seconds: float


class Liveness(BaseModel):
    status: str = Field(..., description='"alive"')
    uptime_s: float


class Readiness(BaseModel):
    status: str = Field(..., description='"ok", or "degraded" when memory holds fewer prompts than the artefact')
    modality: str
    active_classes: int
    forgotten_classes: int
    artefact_sha256: str
    in_sync_with_artefact: bool
    uptime_s: float


class NotReady(BaseModel):
    status: str = Field(..., description='"ledger_broken" or "artefact_unreadable"')
    detail: str


def errors(*codes: int) -> dict:
    """``responses=`` for a route: each error code with the ``{"detail": ...}`` body every error has."""
    why = {400: "malformed JSON", 401: "missing or wrong bearer token", 404: "unknown class",
           408: "body not received in time", 409: "conflict (ledger does not verify, already forgotten, "
           "request id reused)", 413: "body or inputs over a limit", 415: "image format not accepted",
           422: "invalid request", 503: "not ready or disk error", 507: "disk full"}
    return {c: {"model": ErrorDetail, "description": why[c]} for c in codes}
