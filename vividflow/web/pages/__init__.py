"""The web app's pages, one module per area; ``router`` serves them all."""

from fastapi import APIRouter

from vividflow.web.pages.account import router as account_router
from vividflow.web.pages.auth import router as auth_router
from vividflow.web.pages.generate import router as generate_router
from vividflow.web.pages.jobs import router as jobs_router

router = APIRouter(include_in_schema=False)
for pages in (auth_router, generate_router, jobs_router, account_router):
    router.include_router(pages)

__all__ = ["router"]
