"""The officials' dashboard: the app and its routers (each module owns its routes)."""

from __future__ import annotations

from fastapi.staticfiles import StaticFiles

from services.dashboard import admin_routes, auth, pages, review_routes, stream, views_routes
from services.dashboard.templating import STATIC_DIR
from shared.web import create_app

app = create_app("dashboard", title="Lookout dashboard",
                 description="Officials' dashboard: signals, review, trends, drug supply.")
auth.install(app)
app.include_router(auth.router)
app.include_router(admin_routes.router)
app.include_router(review_routes.router)
app.include_router(pages.router)
app.include_router(stream.router)
app.include_router(views_routes.router)
# CSS, the live-update client, and the vendored front-end code (static/vendor/<pkg>/, each
# with its LICENSE and package.json): nothing is loaded from outside the dashboard.
app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
