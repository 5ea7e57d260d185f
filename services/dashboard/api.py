"""The officials' dashboard: the app and its routers (each module owns its routes)."""

from __future__ import annotations

from services.dashboard import auth, pages, stream
from shared.web import create_app

app = create_app("dashboard", title="Lookout dashboard",
                 description="Officials' dashboard: signals, review, trends, drug supply.")
auth.install(app)
app.include_router(auth.router)
app.include_router(pages.router)
app.include_router(stream.router)
