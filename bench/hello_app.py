"""The baseline: a bare Flask JSON hello, served by the same gunicorn config."""

from flask import Flask

app = Flask(__name__)


@app.get("/v1/internal")
def hello() -> dict[str, str]:
    return {"version": "v1"}


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
