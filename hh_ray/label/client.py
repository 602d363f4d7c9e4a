"""`LabelClient`: a typed HTTP client of the labeling JSON API (tests, the load benchmark, simulated labelers).

It speaks only HTTP, as a person's browser does: logs in with its own account, keeps the session cookie and
sends the CSRF token on every state-changing request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

CSRF_HEADER = "X-CSRF-Token"


class LabelAPIError(RuntimeError):
    """The service refused a request; `status` is the HTTP status, `message` its explanation."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


@dataclass(frozen=True)
class TaskPair:
    task_id: str
    context: str
    response_a: str
    response_b: str


@dataclass(frozen=True)
class ChoiceAck:
    comparison_id: int
    task_id: str
    choice: str
    strength: int
    duplicate: bool


class LabelClient:
    """One labeler's session with the service at `base_url` (http://host:port)."""

    def __init__(self, base_url: str, timeout_s: float = 120.0, local_address: str | None = None):
        transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, follow_redirects=False,
                                 transport=transport)
        self.csrf_token: str | None = None
        self.user: str | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "LabelClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _json(self, response: httpx.Response):
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise LabelAPIError(response.status_code, message)
        return response.json()

    def _post(self, path: str, body: dict | None = None):
        headers = {CSRF_HEADER: self.csrf_token} if self.csrf_token else {}
        return self._json(self.http.post(path, json=body or {}, headers=headers))

    def _get(self, path: str):
        return self._json(self.http.get(path))

    def login(self, name: str, password: str) -> str:
        """Log in (login CSRF token first, then the credentials); returns the role."""
        token = self._get("/api/login")["csrf_token"]
        r = self._json(self.http.post("/api/login", json={"name": name, "password": password},
                                      headers={CSRF_HEADER: token}))
        self.csrf_token, self.user = r["csrf_token"], r["user"]
        return r["role"]

    def change_password(self, current: str, new: str) -> None:
        """Replace the password (a one-time password must be replaced before anything else)."""
        self._post("/api/password", {"current_password": current, "new_password": new})

    def logout(self) -> None:
        self._post("/api/logout")
        self.csrf_token = None

    def campaigns(self) -> list[tuple[str, str]]:
        return [(c["name"], c["mode"]) for c in self._get("/api/campaigns")]

    def start(self, campaign: str) -> int:
        return self._post("/api/conversations", {"campaign": campaign})["conversation_id"]

    def post_turn(self, conversation_id: int, text: str) -> TaskPair:
        r = self._post(f"/api/conversations/{conversation_id}/turns", {"text": text})
        return TaskPair(r["task_id"], r["context"], r["response_a"], r["response_b"])

    def stream_turn(self, conversation_id: int, text: str) -> Iterator[tuple[str, dict]]:
        """The turn with its answers streamed: (event, data) as the service sends them, `text` events (both
        answers so far) then one `task` (the stored pair, as `post_turn` returns it) or `error`."""
        headers = {CSRF_HEADER: self.csrf_token} if self.csrf_token else {}
        with self.http.stream("POST", f"/api/conversations/{conversation_id}/turns/stream", json={"text": text},
                              headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                self._json(response)
            event = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif line.startswith("data: ") and event:
                    yield event, json.loads(line[len("data: "):])
                    event = None

    def choose(self, task_id: str, choice: str, strength: int) -> ChoiceAck:
        r = self._post("/api/choices", {"task_id": task_id, "choice": choice, "strength": strength})
        return ChoiceAck(r["comparison_id"], r["task_id"], r["choice"], r["strength"], r["duplicate"])

    def end(self, conversation_id: int) -> None:
        self._post(f"/api/conversations/{conversation_id}/end")

    def conversation(self, conversation_id: int) -> dict:
        return self._get(f"/api/conversations/{conversation_id}")

    def stats(self) -> dict:
        return self._get("/api/me/stats")

    def add_user(self, name: str, role: str = "labeler") -> str:
        """Admins only: create an account; returns its one-time password."""
        return self._post("/api/admin/users", {"name": name, "role": role})["password"]

    def progress(self) -> dict:
        return self._get("/api/admin/progress")
