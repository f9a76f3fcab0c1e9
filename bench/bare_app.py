"""The ceiling for bench/api_load.py: a bare FastAPI endpoint with no auth, DB or limits."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/api/v1/status/{job_id}")
async def status(job_id: str) -> dict[str, str]:
    return {"job_id": job_id, "status": "queued", "message": "Job is in queue."}
